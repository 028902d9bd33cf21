"""Plugin sources the daemon tests add from git: small, real, and each with one purpose."""

TICKER = """
    from iochost import TaskBase

    class Ticker(TaskBase):
        def initialize(self):
            self.n = 0

        def execute(self):
            self.n += 1
            self.set_pv("VALUE", self.n)

        def cleanup(self):
            pass
"""

TICKER_CONFIG = """
    parameters: {interval: 0.2}
    pvs:
      inputs:
        GAIN: {type: float, value: 2.5, unit: V, prec: 2}
      outputs:
        VALUE: {type: int, value: 0}
"""

SLOW_JOB = """
    import time
    from iochost import JobBase, JobResult

    class Slow(JobBase):
        def initialize(self):
            pass

        def execute(self):
            steps = int(self.parameters["steps"])
            for _ in range(steps):
                time.sleep(0.1)
                self.check_cancelled()
            return JobResult(success=True, data={"steps": steps}, message=f"{steps} steps")
"""

SLOW_JOB_CONFIG = "parameters: {steps: 3}\npvs: {outputs: {DONE: {type: int}}}\n"
