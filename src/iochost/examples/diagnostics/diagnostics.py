"""Report host health: hostname, load average and free disk space."""

import os
import shutil
import socket

from iochost import JobBase, JobResult


class Diagnostics(JobBase):
    def initialize(self):
        self.hostname = socket.gethostname()

    def execute(self) -> JobResult:
        load_1min = os.getloadavg()[0]
        free_gb = shutil.disk_usage(self.parameters["disk_path"]).free / 1e9
        self.set_pv("HOSTNAME", self.hostname)
        self.set_pv("LOAD_1MIN", load_1min)
        self.set_pv("DISK_FREE", free_gb)
        data = {"hostname": self.hostname, "load_1min": load_1min, "disk_free_gb": round(free_gb, 1)}
        return JobResult(success=True, data=data, message=f"{free_gb:.1f} GB free")
