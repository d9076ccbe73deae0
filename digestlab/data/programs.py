"""Tiny Python sessions and what they really print: a corpus for learning when a print raises.

Each session is 2 to 4 assignments and 2 or 3 prints, interleaved as at an interactive prompt:
every print is followed by its output line, the printed value or the name of the exception it
raises, and the session goes on after an error (a failed print changes no variable).

    >>> a = 4
    >>> b = 0
    >>> print(a + b)
    4
    >>> c = [3, 1]
    >>> print(a // b)
    ZeroDivisionError

Every print is drawn on its own and is buggy with probability bug_percent / 100, its error
drawn evenly from ZeroDivisionError, NameError, TypeError and IndexError, so each session
gives several outputs to learn from. Names are single letters that say nothing of the type,
and each bug shows in one earlier line, found by that one letter: the divisor holds 0 (or is
a 0 written in the print), the name was never assigned, a value is a str (or an int given to
len), a list of 0 to 3 items is shorter than the index. Every buggy final print has a clean
twin: the same session but one line, a line no earlier print reads, so the twins' earlier
outputs are the same. Clean outputs never start with an uppercase letter and error names
always do, so the first byte of an output line already tells an error from a value.

Outputs come from running the lines, not from a rule written beside them: `run_session`
executes them under a whitelist of syntax and builtins. Every session follows from a
splitmix64 stream seeded by (seed, index) alone, so the same seed writes the same bytes on
every machine.
"""

from __future__ import annotations

import ast
import functools
import operator
import signal
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import CodeType

from digestlab.data.rng import SplitMix64

ERROR_TYPES: tuple[str, ...] = ("ZeroDivisionError", "NameError", "TypeError", "IndexError")
PROMPT = ">>> "
ERROR_FIRST_BYTES: tuple[int, ...] = tuple(range(ord("A"), ord("Z") + 1))


def is_error_output(first_char: str) -> bool:
    """Whether an output line starting with this character names an error (A to Z)."""
    return "A" <= first_char <= "Z"


# --- running a program -----------------------------------------------------------------------
#
# Each line is parsed, checked node by node against a whitelist (names, int and str constants,
# lists, subscripts, + - * // %, unary minus, calls of print and four builtins) and compiled,
# once per distinct line. Every BinOp is compiled as a call of a guard that runs the real
# operator and refuses a result longer than MAX_REPR, so no value can grow large; with no loops
# the work is bounded by the lines and nodes, and a timer is only a second fence.

CALLABLES: dict[str, Callable] = {"len": len, "min": min, "max": max, "abs": abs}  # and print
MAX_REPR = 40  # the longest repr a value may have, at any step
MAX_NODES = 100  # syntax nodes in one line
MAX_LINES = 20  # statements in one program
TIME_LIMIT_S = 1.0  # wall clock for one program, where a timer can be set
_OPERATORS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
              ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod}
_CALLABLE_NAMES = ("print", *CALLABLES)
_ERRORS = (ZeroDivisionError, NameError, TypeError, IndexError)


class UnsafeProgram(ValueError):
    """A program outside the whitelist, or one whose values grow too long."""


def _check_size(value: object) -> object:
    if len(repr(value)) > MAX_REPR:
        raise UnsafeProgram(f"a value longer than {MAX_REPR} characters: {repr(value)[:50]}...")
    return value


def _guarded_operator(name: str, apply: Callable) -> Callable:
    """`apply` checked on both sides: a repetition (str or list times an int) is refused
    before it is built, and every result must stay short."""
    def guarded(left: object, right: object) -> object:
        if apply is operator.mul:
            for seq, count in ((left, right), (right, left)):
                if isinstance(seq, str | list) and type(count) is int:
                    _check_size(seq * max(0, min(count, MAX_REPR + 1)))
        return _check_size(apply(left, right))

    guarded.__name__ = name
    return guarded


# Each BinOp runs through one of these; the names start with "_", which programs may not use.
_GUARDS = {op: _guarded_operator(f"_{op.__name__.lower()}", apply)
           for op, apply in _OPERATORS.items()}
_GUARD_NAMES = {guard.__name__: guard for guard in _GUARDS.values()}


def _whitelisted(node: ast.AST, nodes_left: list[int]) -> ast.AST:
    """The node after checking it and everything under it against the whitelist, with each
    BinOp turned into a call of its guard. Written out node by node: what is not named here
    is refused."""
    nodes_left[0] -= 1
    if nodes_left[0] < 0:
        raise UnsafeProgram(f"more than {MAX_NODES} syntax nodes")
    kind = type(node)
    if kind is ast.Name:
        if node.id.startswith("_"):
            raise UnsafeProgram(f"the name {node.id!r} is not allowed in a program")
    elif kind is ast.Constant:
        if type(node.value) not in (int, str):
            raise UnsafeProgram(f"a {type(node.value).__name__} constant is not allowed")
        _check_size(node.value)
    elif kind is ast.BinOp:
        if type(node.op) not in _GUARDS:
            raise UnsafeProgram(f"{type(node.op).__name__} is not allowed in a program")
        guard = ast.copy_location(ast.Name(_GUARDS[type(node.op)].__name__, ast.Load()), node)
        args = [_whitelisted(node.left, nodes_left), _whitelisted(node.right, nodes_left)]
        return ast.copy_location(ast.Call(guard, args, []), node)
    elif kind is ast.Call:
        if type(node.func) is not ast.Name or node.func.id not in _CALLABLE_NAMES:
            raise UnsafeProgram(f"a call of {ast.unparse(node.func)!r}; only "
                                f"{', '.join(_CALLABLE_NAMES)} may be called")
        if node.keywords:
            raise UnsafeProgram("keyword arguments are not allowed in a program")
        node.args = [_whitelisted(arg, nodes_left) for arg in node.args]
    elif kind is ast.Subscript:
        node.value = _whitelisted(node.value, nodes_left)
        node.slice = _whitelisted(node.slice, nodes_left)
    elif kind is ast.List:
        node.elts = [_whitelisted(element, nodes_left) for element in node.elts]
    elif kind is ast.UnaryOp:
        if type(node.op) is not ast.USub:
            raise UnsafeProgram(f"{type(node.op).__name__} is not allowed in a program")
        node.operand = _whitelisted(node.operand, nodes_left)
    elif kind is ast.Expr:
        node.value = _whitelisted(node.value, nodes_left)
    elif kind is ast.Assign:
        for target in node.targets:
            if type(target) is not ast.Name:
                raise UnsafeProgram("assignment to anything but a name")
            if target.id in _CALLABLE_NAMES:
                raise UnsafeProgram(f"assignment to the builtin {target.id!r}")
            _whitelisted(target, nodes_left)
        node.value = _whitelisted(node.value, nodes_left)
    elif kind is ast.Module:
        node.body = [_whitelisted(statement, nodes_left) for statement in node.body]
    else:
        raise UnsafeProgram(f"{kind.__name__} is not allowed in a program")
    return node


def _on_alarm(signum: int, frame: object) -> None:
    raise UnsafeProgram(f"ran longer than {TIME_LIMIT_S} s")


@functools.lru_cache(maxsize=32768)
def compiled_line(line: str) -> CodeType:
    """One statement, checked against the whitelist and compiled. Sessions share most of
    their lines (`a = 7`), so each is parsed and compiled once."""
    return compile(_whitelisted(ast.parse(line), [MAX_NODES]), "<program>", "exec")


def _within_time_limit(run: Callable[[], list[str | None]]) -> list[str | None]:
    """run(), stopped after TIME_LIMIT_S where a timer can be set (the main thread, on Unix).
    Without loops the whitelist already bounds the work by the number of lines and nodes, so
    the timer is a second fence, not the first."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(
            signal, "setitimer"):
        return run()
    previous_handler = signal.signal(signal.SIGALRM, _on_alarm)
    previous_timer = signal.setitimer(signal.ITIMER_REAL, TIME_LIMIT_S)
    try:
        return run()
    finally:
        signal.setitimer(signal.ITIMER_REAL, *previous_timer)
        signal.signal(signal.SIGALRM, previous_handler)


def run_session(lines: Sequence[str]) -> tuple[str | None, ...]:
    """Run the statements, one a line, as an interactive session does, and return what each
    shows after it: the line it prints, the name of the error (one of ERROR_TYPES) it raises,
    or None. An error ends only its own statement. Raises UnsafeProgram for anything outside
    the whitelist or a statement that shows more than one short line, and re-raises any other
    exception: the generator never means to write one."""
    if len(lines) > MAX_LINES:
        raise UnsafeProgram(f"more than {MAX_LINES} lines")
    codes = [compiled_line(line) for line in lines]
    printed: list[str] = []

    def print_(*args: object) -> None:
        printed.append(" ".join(str(a) for a in args))

    namespace: dict = {"__builtins__": {**CALLABLES, "print": print_}, **_GUARD_NAMES}

    def run_each() -> list[str | None]:
        shown: list[str | None] = []
        for code in codes:
            start = len(printed)
            try:
                exec(code, namespace)
            except _ERRORS as e:
                if type(e).__name__ not in ERROR_TYPES:
                    raise
                printed.append(type(e).__name__)
            if len(printed) - start > 1:
                raise UnsafeProgram(f"a statement showed {len(printed) - start} lines")
            shown.append(printed[start] if len(printed) > start else None)
        return shown

    shown = _within_time_limit(run_each)
    for name, value in namespace.items():
        if not name.startswith("_"):  # list displays are built without a guard
            _check_size(value)
    for line in shown:
        if line is not None and ("\n" in line or len(line) > MAX_REPR):
            raise UnsafeProgram(f"printed more than one short line: {line[:50]!r}")
    return tuple(shown)


@functools.lru_cache(maxsize=64)
def _shown(lines: tuple[str, ...]) -> tuple[str | None, ...]:
    """run_session, remembered for the few sessions last run: building a Program runs its
    lines, then its constructor checks them against the same run."""
    return run_session(lines)


def run_program(lines: Sequence[str]) -> str:
    """The last line the session shows: what its final print prints, or the error's name."""
    shown = [line for line in run_session(lines) if line is not None]
    if not shown:
        raise ValueError("the program printed nothing")
    return shown[-1]


# --- programs --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Program:
    """One session: its statements, and what running them shows."""

    lines: tuple[str, ...]  # every statement without the prompt; the last is the final print
    output: str  # what the final print shows: the printed text or the error's name
    error: str | None  # the final print's error, None when clean
    fixed_output: str | None = None  # for a buggy final print: its clean twin's output
    earlier_outputs: tuple[str | None, ...] = ()  # per statement before the last: None or its line

    def __post_init__(self) -> None:
        shown = _shown(tuple(self.lines))
        assert self.output == shown[-1] and self.earlier_outputs == shown[:-1], (
            self.lines, self.earlier_outputs, self.output)
        assert self.error == (self.output if self.output in ERROR_TYPES else None)
        assert is_error_output(self.output[0]) == (self.error is not None), self.output
        assert (self.fixed_output is None) == (self.error is None)
        assert self.fixed_output is None or not is_error_output(self.fixed_output[0])

    @classmethod
    def run(cls, lines: Sequence[str], fixed_output: str | None = None) -> Program:
        """The session of these lines, with what they show when run."""
        *earlier, output = _shown(tuple(lines))
        if output is None:
            raise ValueError(f"the last statement shows nothing: {lines[-1]!r}")
        return cls(tuple(lines), output, output if output in ERROR_TYPES else None,
                   fixed_output, tuple(earlier))

    def outputs(self) -> tuple[str, ...]:
        """Every line the session shows, in order; the final print's output last."""
        return (*(line for line in self.earlier_outputs if line is not None), self.output)

    def prompt(self) -> str:
        """What the model reads before the final output: every statement after the prompt,
        each earlier print followed by its output line."""
        parts = []
        for line, shown in zip(self.lines, (*self.earlier_outputs, None), strict=True):
            parts.append(f"{PROMPT}{line}\n" if shown is None else f"{PROMPT}{line}\n{shown}\n")
        return "".join(parts)

    def text(self) -> str:
        """The whole session: the prompt, then the final output line."""
        return f"{self.prompt()}{self.output}\n"


# --- values ----------------------------------------------------------------------------------

Value = int | str | list[int]

# Variables are single letters, so each look-up is keyed by one byte; l and o read like 1
# and 0. A name is drawn evenly from the free letters whatever its value, so it hints at
# nothing.
LETTERS = tuple("abcdefghijkmnpqrstuvwxyz")
WORDS = (
    "ab", "cat", "red", "dog", "sun", "hi", "ok", "box", "cup", "pen", "map", "sky", "tea",
    "ice", "fox", "owl", "go", "up", "bee", "hat",
)
VALUE_TYPES = {int: 9, str: 4, list: 7}  # what an assignment no print asked for holds
MAX_ITEMS = 3  # lists hold 0 to 3 items, so a length is read at a glance
BUG_PERCENT = 20  # how often a print is buggy, in training and before a pair's final print
REUSE_PERCENT = 50  # how often a print reads a fitting variable already bound, not a new one
LITERAL_PERCENT = 30  # how often an operand that may be a number is written as one
LITERAL_DIVISOR_PERCENT = 20  # divisors written in the print rather than assigned
LAST_INDEX_PERCENT = 33  # clean indices that are exactly len - 1: the edge to learn
EDGE_INDEX_PERCENT = 60  # out-of-range indices that are exactly len
DRAW_TRIES = 100  # draws of an earlier print before it falls back to a clean echo


def small_int(rng: SplitMix64) -> int:
    """0 to 9, with 0 more often than the rest (so a zero is no sign of a bug), and now and
    then 10 to 20."""
    if rng.chance(10):
        return rng.between(10, 20)
    return 0 if rng.chance(15) else rng.between(1, 9)


def nonzero_int(rng: SplitMix64) -> int:
    """1 to 9: a divisor that divides."""
    return rng.between(1, 9)


def short_list(rng: SplitMix64, low: int = 0, high: int = MAX_ITEMS) -> list[int]:
    """low to high digits, every length equally often (so a fourth of lists are empty)."""
    return [rng.below(10) for _ in range(rng.between(low, high))]


def word(rng: SplitMix64) -> str:
    """A short lowercase word."""
    return rng.choice(WORDS)


def any_value(rng: SplitMix64) -> Value:
    """An int, a str or a list."""
    value_type = rng.weighted(VALUE_TYPES)
    if value_type is int:
        return small_int(rng)
    return word(rng) if value_type is str else short_list(rng)


def sized_value(rng: SplitMix64) -> Value:
    """What len() takes: a list three times in four, else a word."""
    return word(rng) if rng.chance(25) else short_list(rng)


def is_int(value: Value) -> bool:
    return type(value) is int


def is_nonzero_int(value: Value) -> bool:
    return type(value) is int and value != 0


def is_zero(value: Value) -> bool:
    return type(value) is int and value == 0


def is_str(value: Value) -> bool:
    return type(value) is str


def is_list(value: Value) -> bool:
    return type(value) is list


def is_nonempty_list(value: Value) -> bool:
    return type(value) is list and len(value) > 0


def is_sized(value: Value) -> bool:
    return type(value) in (str, list)


def is_anything(value: Value) -> bool:
    return True


# --- drawing a session -----------------------------------------------------------------------


@dataclass
class Print:
    """One print as drawn: its argument, and for a buggy one the change that makes it clean."""

    template: str  # the argument with {0}, {1} for its operands
    operands: list[str]  # each a variable's name or a number
    variables: tuple[int, ...]  # which operands are variables
    fix_operand: tuple[int, str] | None = None  # (operand, its text in the clean twin)
    fix_value: tuple[int, Value] | None = None  # (assignment's position, its clean value)

    def line(self) -> str:
        return f"print({self.template.format(*self.operands)})"


class Session:
    """A session being drawn: a layout of assignments ("A") and prints ("P"), the assignments
    bound so far and the prints drawn so far. An assignment is bound when a print first asks
    for a variable it can hold; the ones left unbound become distractors at the end."""

    def __init__(self, rng: SplitMix64, layout: str) -> None:
        self.rng = rng
        self.layout = layout
        self.bound: dict[int, tuple[str, Value]] = {}  # position -> (name, value)
        self.prints: dict[int, Print] = {}  # position -> print
        self.taken: set[str] = set()  # names assigned, or printed but never to be assigned

    def name(self, position: int) -> str:
        return self.bound[position][0]

    def value(self, position: int) -> Value:
        return self.bound[position][1]

    def new_name(self) -> str:
        """A letter no line of the session uses yet."""
        name = self.rng.choice([c for c in LETTERS if c not in self.taken])
        self.taken.add(name)
        return name

    def unbound(self, before: int | None = None) -> list[int]:
        """Positions of the assignments not yet bound (before `before`, where given)."""
        return [at for at, kind in enumerate(self.layout[:before])
                if kind == "A" and at not in self.bound]

    def variable(self, at: int, fits: Callable[[Value], bool],
                 make: Callable[[SplitMix64], Value], *, final: bool) -> int | None:
        """The position of an assignment before `at` whose value `fits` accepts: half the time
        one already bound when one fits, else a new one holding make(rng). The final print's
        variable is always new, so no earlier print reads it and its twin can change it; an
        earlier print leaves the final print one assignment to bind. None when neither can be
        had."""
        free = self.unbound(at)
        can_bind = bool(free) and (final or len(self.unbound()) > 1)
        if not final:
            fitting = [p for p, (_, value) in self.bound.items() if p < at and fits(value)]
            if fitting and (not can_bind or self.rng.chance(REUSE_PERCENT)):
                return self.rng.choice(fitting)
        if not can_bind:
            return None
        position = self.rng.choice(free)
        self.bound[position] = (self.new_name(), make(self.rng))
        return position

    def number(self, at: int, fits: Callable[[Value], bool] = is_int,
               make: Callable[[SplitMix64], int] = small_int) -> tuple[str, bool]:
        """An operand holding an int: a number written in the print, or an earlier variable.
        Returns (its text, whether it is a variable)."""
        if not self.rng.chance(LITERAL_PERCENT):
            position = self.variable(at, fits, make, final=False)
            if position is not None:
                return self.name(position), True
        return str(make(self.rng)), False

    def save(self) -> tuple[dict[int, tuple[str, Value]], set[str]]:
        """What a print's draw may change, to put back if the draw fails."""
        return dict(self.bound), set(self.taken)

    def restore(self, saved: tuple[dict[int, tuple[str, Value]], set[str]]) -> None:
        self.bound, self.taken = saved

    def lines(self, fixed: bool = False) -> tuple[str, ...]:
        """The statements; with `fixed`, the final print's twin: its one change applied."""
        bound, final = dict(self.bound), self.prints[len(self.layout) - 1]
        prints = dict(self.prints)
        if fixed and final.fix_value is not None:
            position, value = final.fix_value
            bound[position] = (bound[position][0], value)
        if fixed and final.fix_operand is not None:
            operand, text = final.fix_operand
            operands = list(final.operands)
            operands[operand] = text
            prints[len(self.layout) - 1] = Print(final.template, operands, final.variables)
        return tuple(f"{bound[at][0]} = {bound[at][1]!r}" if kind == "A" else prints[at].line()
                     for at, kind in enumerate(self.layout))


# Each kind of print draws itself clean, or with the one error it is named for in KINDS;
# NameError is drawn by every kind, clean, with one name then swapped for an unassigned one.
# `final` asks that the variable the bug lives in be new, and that the fix be recorded.
DrawPrint = Callable[[Session, int, str | None, bool], Print | None]


def _echo(s: Session, at: int, error: str | None, final: bool) -> Print | None:
    position = s.variable(at, is_anything, any_value, final=final)
    return None if position is None else Print("{0}", [s.name(position)], (0,))


def _ordered(s: Session, key: str, other: tuple[str, bool], symbol: str
             ) -> tuple[str, list[str], tuple[int, ...]]:
    """`key symbol other` or the other way round, with which operands are variables."""
    text, is_variable = other
    if s.rng.chance(50):
        return f"{{0}} {symbol} {{1}}", [key, text], (0, 1) if is_variable else (0,)
    return f"{{0}} {symbol} {{1}}", [text, key], (0, 1) if is_variable else (1,)


def _add(s: Session, at: int, error: str | None, final: bool) -> Print | None:
    """a + b of ints; a TypeError when one of them holds a str (its twin: an int)."""
    position = s.variable(at, is_str if error else is_int, word if error else small_int,
                          final=final)
    if position is None:
        return None
    template, operands, variables = _ordered(s, s.name(position), s.number(at), "+")
    fix = (position, small_int(s.rng)) if error else None
    return Print(template, operands, variables, fix_value=fix)


def _sub(s: Session, at: int, error: str | None, final: bool) -> Print | None:
    """a - b of ints, often below zero."""
    position = s.variable(at, is_int, small_int, final=final)
    if position is None:
        return None
    return Print(*_ordered(s, s.name(position), s.number(at), "-"))


def _division(symbol: str) -> DrawPrint:
    def draw(s: Session, at: int, error: str | None, final: bool) -> Print | None:
        """a // b or a % b; a ZeroDivisionError when the divisor is 0: a variable holding 0
        (its twin: another number) or, now and then, a 0 written in the print."""
        template = f"{{0}} {symbol} {{1}}"
        if s.rng.chance(LITERAL_DIVISOR_PERCENT):
            position = s.variable(at, is_int, small_int, final=final)
            if position is None:
                return None
            divisor = 0 if error else nonzero_int(s.rng)
            fix = (1, str(nonzero_int(s.rng))) if error else None
            return Print(template, [s.name(position), str(divisor)], (0,), fix_operand=fix)
        position = s.variable(at, is_zero if error else is_nonzero_int,
                              (lambda rng: 0) if error else nonzero_int, final=final)
        if position is None:
            return None
        numerator, is_variable = s.number(at)
        fix = (position, nonzero_int(s.rng)) if error else None
        return Print(template, [numerator, s.name(position)], (0, 1) if is_variable else (1,),
                     fix_value=fix)
    return draw


def _index(s: Session, at: int, error: str | None, final: bool) -> Print | None:
    """xs[i] with a written index 0 to 3; an IndexError when i >= len(xs) (its twin: an index
    inside the list, or a list long enough)."""
    if error:
        position = s.variable(at, is_list, short_list, final=final)
    else:
        position = s.variable(at, is_nonempty_list, lambda rng: short_list(rng, 1), final=final)
    if position is None:
        return None
    n = len(s.value(position))
    if not error:
        i = n - 1 if s.rng.chance(LAST_INDEX_PERCENT) else s.rng.below(n)
        return Print("{0}[{1}]", [s.name(position), str(i)], (0,))
    # An empty list can only be fixed by a longer one, so its index stays below MAX_ITEMS.
    high = MAX_ITEMS - 1 if n == 0 else MAX_ITEMS
    i = n if n == high or s.rng.chance(EDGE_INDEX_PERCENT) else s.rng.between(n + 1, high)
    fixes: list[dict] = []
    if n > 0:
        inside = n - 1 if s.rng.chance(LAST_INDEX_PERCENT) else s.rng.below(n)
        fixes.append({"fix_operand": (1, str(inside))})
    if i < MAX_ITEMS:
        fixes.append({"fix_value": (position, short_list(s.rng, i + 1))})
    return Print("{0}[{1}]", [s.name(position), str(i)], (0,), **s.rng.choice(fixes))


def _length(s: Session, at: int, error: str | None, final: bool) -> Print | None:
    """len(xs) of a list or a word; a TypeError when xs holds an int (its twin: a list)."""
    position = s.variable(at, is_int if error else is_sized, small_int if error else sized_value,
                          final=final)
    if position is None:
        return None
    fix = (position, short_list(s.rng)) if error else None
    return Print("len({0})", [s.name(position)], (0,), fix_value=fix)


@dataclass(frozen=True)
class Kind:
    """One form of print: how to draw it, the error it can carry besides NameError, how often
    it comes among clean prints and among NameErrors."""

    draw: DrawPrint
    error: str | None
    weight: int


KINDS: dict[str, Kind] = {
    "echo": Kind(_echo, None, 2),
    "add": Kind(_add, "TypeError", 2),
    "sub": Kind(_sub, None, 1),
    "floordiv": Kind(_division("//"), "ZeroDivisionError", 2),
    "mod": Kind(_division("%"), "ZeroDivisionError", 1),
    "index": Kind(_index, "IndexError", 3),
    "len": Kind(_length, "TypeError", 2),
}
_ALL_WEIGHTS = {name: kind.weight for name, kind in KINDS.items()}
_WEIGHTS_BY_ERROR = {error: {name: kind.weight for name, kind in KINDS.items()
                             if kind.error == error} for error in ERROR_TYPES}


def draw_print(s: Session, at: int, error: str | None, final: bool) -> Print | None:
    """A print at position `at` that raises `error` (None: clean), of a kind that can; None
    when the variables it needs cannot be had there."""
    if error == "NameError":
        drawn = KINDS[s.rng.weighted(_ALL_WEIGHTS)].draw(s, at, None, final)
        if drawn is None:
            return None
        operand = s.rng.choice(drawn.variables)
        drawn.fix_operand = (operand, drawn.operands[operand])
        drawn.operands[operand] = s.new_name()
        return drawn
    weights = _ALL_WEIGHTS if error is None else _WEIGHTS_BY_ERROR[error]
    return KINDS[s.rng.weighted(weights)].draw(s, at, error, final)


def outcome(rng: SplitMix64, bug_percent: int) -> str | None:
    """A print's error, each of ERROR_TYPES equally often, with probability bug_percent / 100;
    else None."""
    return rng.choice(ERROR_TYPES) if rng.chance(bug_percent) else None


def draw_session(rng: SplitMix64, final_error: str | None, bug_percent: int) -> Session:
    """2 to 4 assignments and 2 or 3 prints, the first line an assignment and the last a
    print raising `final_error`; each earlier print buggy with probability bug_percent / 100."""
    n_assignments, n_prints = rng.between(2, 4), rng.between(2, 3)
    middle = ["A"] * (n_assignments - 1) + ["P"] * (n_prints - 1)
    rng.shuffle(middle)
    s = Session(rng, "".join(["A", *middle, "P"]))
    final = len(s.layout) - 1
    for at in (at for at, kind in enumerate(s.layout) if kind == "P" and at != final):
        # A print whose variables cannot be had here (a list, before any is assigned and with
        # no assignment to spare) is drawn again, its error too.
        for _ in range(DRAW_TRIES):
            saved = s.save()
            drawn = draw_print(s, at, outcome(rng, bug_percent), final=False)
            if drawn is not None:
                break
            s.restore(saved)
        else:
            drawn = _echo(s, at, None, final=False)  # some variable is always bound by now
        assert drawn is not None
        s.prints[at] = drawn
    drawn = draw_print(s, final, final_error, final=True)
    assert drawn is not None, "the final print always has an assignment left to bind"
    s.prints[final] = drawn
    for at in s.unbound():
        s.bound[at] = (s.new_name(), any_value(rng))
    return s


def _stream(seed: int, index: int, salt: int = 0) -> SplitMix64:
    """Session `index`'s own stream; a salt gives a stream apart from the training stream of
    the same seed (the evaluation pairs, one salt per error type)."""
    mixed = SplitMix64(((seed & 0xFFFFFFFF) << 32) | (index & 0xFFFFFFFF)).next_u64()
    return SplitMix64(mixed ^ salt)


def _twins(s: Session, error: str) -> tuple[Program, Program]:
    twin = Program.run(s.lines(fixed=True))
    buggy = Program.run(s.lines(), fixed_output=twin.output)
    assert buggy.error == error and twin.error is None, (buggy.lines, twin.lines, error)
    assert buggy.earlier_outputs == twin.earlier_outputs, (buggy.lines, twin.lines)
    return twin, buggy


def program(seed: int, index: int, bug_percent: int = BUG_PERCENT) -> Program:
    """Session `index` of the training stream with this seed: every print, the final one too,
    buggy with probability bug_percent / 100."""
    rng = _stream(seed, index)
    error = outcome(rng, bug_percent)
    s = draw_session(rng, error, bug_percent)
    return Program.run(s.lines()) if error is None else _twins(s, error)[1]


def pair(seed: int, index: int, error: str) -> tuple[Program, Program]:
    """(clean twin, buggy session) whose final prints differ: the buggy one raises `error`.
    The earlier prints are drawn as in training and are the same in both. Each error type has
    its own streams, apart from `program`'s with the same seed."""
    if error not in ERROR_TYPES:
        raise ValueError(f"unknown error {error!r}; expected one of {ERROR_TYPES}")
    rng = _stream(seed, index, salt=1 + ERROR_TYPES.index(error))
    return _twins(draw_session(rng, error, BUG_PERCENT), error)


def training_documents(n: int, seed: int, bug_percent: int = BUG_PERCENT) -> list[str]:
    """The text of sessions 0 to n - 1 of the stream with this seed, one document each."""
    return [program(seed, i, bug_percent).text() for i in range(n)]
