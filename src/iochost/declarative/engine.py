"""The declarative engine: iocmng 2.7's transforms, rules, rule_defaults and latches, as
pure logic. It holds the latest value of every input and output and the ring buffers; the
worker feeds it (``update``), asks it to ``evaluate`` and writes the outputs it returns.

Semantics kept from iocmng 2.7.9 (base/task.py): transforms run first, in order, each
seeing the ones before; then every output in ``rule_defaults`` that is not latched takes
its default, and every rule whose condition holds sets its outputs; a latched output
(``latch: true``) keeps the value a rule gave it (``latch_dir``: rise = a 1, fall = a 0,
any = either) until CLEAR, after which it does not re-latch until no rule drives it for
one evaluation. Better than iocmng: an output gets one write per evaluation (its final
value), not a default followed by the rule's value, so monitors see no glitch.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from iochost.config.schema import PluginConfig, Rule
from iochost.rule_language.expressions import Expression, compile_expression
from iochost.rule_language.functions import FunctionLibrary


@dataclass
class Decision:
    """What one evaluation decided: output writes (final values, in order), the messages
    of the rules that fired (with ``message_pv`` writes), and actuator puts."""

    outputs: dict[str, Any] = field(default_factory=dict)
    fired: list[Rule] = field(default_factory=list)
    actuators: dict[str, Any] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


class Engine:
    """One plugin's transforms, rules and latches over the latest values: fed by the worker,
    evaluated on its plugin thread, answering with a ``Decision`` it applies."""

    def __init__(self, config: PluginConfig, initial: dict[str, Any], functions: FunctionLibrary) -> None:
        """``functions``: the library expressions call, read at each evaluation (``initialize()``
        may still register some: ``PluginHost`` checks it did)."""
        self.config = config
        self.functions = functions
        names = config.expression_names()
        # functions are looked up at each evaluation: initialize() may register some (PluginHost checks it did)
        self.transforms: list[tuple[str, Expression]] = [
            (t.output, compile_expression(t.expression, names, check_functions=False)) for t in config.transforms]
        self.rules: list[tuple[Rule, Expression]] = [
            (rule, compile_expression(rule.condition, names, check_functions=False)) for rule in config.rules]
        self.values: dict[str, Any] = dict(initial)
        pvs = {**config.pvs.inputs, **config.pvs.outputs}
        self.buffers: dict[str, deque[Any]] = {
            name: deque(maxlen=pv.buffer_size) for name, pv in pvs.items() if pv.buffer_size}
        self.latched: set[str] = set()
        self.clear_inhibit: set[str] = set()
        parameters = config.parameters.model_dump()
        self._parameters = {k: v for k, v in parameters.items() if k not in pvs}

    @property
    def active(self) -> bool:
        """Whether there is anything to evaluate (a plain task has no transforms or rules)."""
        return bool(self.transforms or self.rules)

    def update(self, name: str, value: Any) -> Any:
        """A new value of an input or output (link, operator or plugin); returns the old one."""
        old = self.values.get(name)
        self.values[name] = value
        buffer = self.buffers.get(name)
        if buffer is not None:
            try:
                buffer.append(float(value))
            except (TypeError, ValueError):
                buffer.append(value)
        return old

    def context(self) -> dict[str, Any]:
        scope = dict(self._parameters)
        scope.update(self.values)
        scope.update({f"{name}_buf": list(buffer) for name, buffer in self.buffers.items()})
        return scope

    def evaluate(self) -> Decision:
        decision = Decision()
        scope = self.context()
        for output, expression in self.transforms:
            try:
                result = expression.evaluate(scope, self.functions)
            except Exception as exc:  # noqa: BLE001 - a runtime error (e.g. sqrt(-1)) is reported, not fatal
                decision.errors.append(f"transforms[{output}]: {type(exc).__name__}: {exc}")
                continue
            scope[output] = result
            decision.outputs[output] = result
        if not self.rules:
            self._apply(decision)
            return decision
        for name, value in self.config.rule_defaults.items():
            if name not in self.latched:
                decision.outputs[name] = value
        driven: set[str] = set()
        for index, (rule, condition) in enumerate(self.rules):
            try:
                fires = bool(condition.evaluate(scope, self.functions))
            except Exception as exc:  # noqa: BLE001
                decision.errors.append(f"rules[{index}] ({rule.id}): {type(exc).__name__}: {exc}")
                continue
            if not fires:
                continue
            decision.fired.append(rule)
            decision.actuators.update(rule.actuators)
            for name, value in rule.outputs.items():
                decision.outputs[name] = value
                driven.add(name)
                if name not in self.clear_inhibit and self._latches(name, value):
                    self.latched.add(name)
        self.clear_inhibit &= driven  # released outputs re-arm once no rule drives them
        self._apply(decision)
        return decision

    def _latches(self, name: str, value: Any) -> bool:
        pv = self.config.pvs.outputs.get(name)
        if pv is None or not pv.latch:
            return False
        return pv.latch_dir == "any" or bool(value) == (pv.latch_dir == "rise")

    def _apply(self, decision: Decision) -> None:
        for name, value in decision.outputs.items():
            self.update(name, value)

    def clear(self) -> dict[str, Any]:
        """CLEAR: release the latched outputs; returns their rule_defaults values to write."""
        released = {name: self.config.rule_defaults[name] for name in self.latched
                    if name in self.config.rule_defaults}
        self.clear_inhibit |= self.latched
        self.latched.clear()
        for name, value in released.items():
            self.update(name, value)
        return released

    def depends_on(self, inputs: set[str]) -> set[str]:
        """Outputs computed from any of ``inputs`` (or their buffers), a rule's ``message_pv``
        among them (as iocmng 2.7.9 counts it): they cannot be trusted while one of those links
        is down."""
        if not inputs:
            return set()
        reads = inputs | {f"{name}_buf" for name in inputs}
        affected = {output for output, expression in self.transforms if expression.names & reads}
        for rule, condition in self.rules:
            if condition.names & reads:
                affected |= set(rule.outputs)
                if rule.message_pv:
                    affected.add(rule.message_pv)
        return affected
