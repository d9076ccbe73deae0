"""A deterministic corpus of small Python modules: the grammar, its weights, and its writer.

Every byte follows from (n_documents, seed) alone: the generator draws from its own splitmix64
stream and walks plain lists and tables, never Python's `random` or hash order, so the corpus
and its sha256 are the same on every machine and Python version. Nothing is downloaded.

Each document is a module with imports, constants, dataclasses, classes and functions.
Names defined near the top (parameters, attributes, constants, functions, imports) are reused
many lines further down, and docstrings name the parameters below them: predicting those bytes
means copying from far back in the context, which is what attention is for.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, field

from digestlab.data.rng import SplitMix64
from digestlab.data.tokens import CorpusSplits, splits_from_documents

# --- vocabulary ------------------------------------------------------------------------------

# Things that have attributes; a list of them holds objects.
ENTITIES = (
    "account", "batch", "block", "booking", "cell", "channel", "chunk", "client", "column",
    "course", "customer", "device", "driver", "edge", "entry", "event", "feature", "frame",
    "grade", "image", "invoice", "item", "job", "label", "layer", "lesson", "message", "node",
    "order", "packet", "page", "patient", "payment", "pixel", "point", "product", "reading",
    "record", "region", "report", "request", "response", "review", "route", "row", "sample",
    "segment", "sensor", "session", "shipment", "signal", "snapshot", "station", "student",
    "task", "ticket", "tile", "token", "trip", "user", "vehicle", "visit", "window", "worker",
)
# Things that are numbers.
QUANTITIES = (
    "amount", "average", "balance", "budget", "capacity", "cost", "count", "delay", "delta",
    "depth", "distance", "duration", "factor", "height", "interval", "length", "level", "limit",
    "margin", "offset", "penalty", "price", "priority", "quota", "rate", "ratio", "score",
    "scale", "size", "speed", "step", "threshold", "timeout", "tolerance", "total", "weight",
    "width",
)
TEXT_NAMES = ("name", "label", "path", "prefix", "title", "status", "kind", "source", "region")
FLAG_NAMES = ("strict", "verbose", "reverse", "enabled", "active", "dry_run", "inclusive")
ADJECTIVES = (
    "active", "cached", "clean", "current", "default", "empty", "expired", "final", "first",
    "fresh", "hidden", "known", "large", "last", "local", "missing", "new", "next", "old",
    "partial", "pending", "previous", "primary", "raw", "recent", "remote", "shared", "small",
    "sorted", "stale", "valid",
)
# (base, third person, past participle)
VERBS = (
    ("apply", "applies", "applied"), ("build", "builds", "built"), ("cache", "caches", "cached"),
    ("check", "checks", "checked"), ("clip", "clips", "clipped"),
    ("collect", "collects", "collected"), ("compute", "computes", "computed"),
    ("count", "counts", "counted"), ("decode", "decodes", "decoded"),
    ("encode", "encodes", "encoded"), ("estimate", "estimates", "estimated"),
    ("fetch", "fetches", "fetched"), ("filter", "filters", "filtered"),
    ("find", "finds", "found"), ("flush", "flushes", "flushed"),
    ("group", "groups", "grouped"), ("ignore", "ignores", "ignored"),
    ("insert", "inserts", "inserted"), ("keep", "keeps", "kept"), ("load", "loads", "loaded"),
    ("measure", "measures", "measured"), ("merge", "merges", "merged"),
    ("normalize", "normalizes", "normalized"), ("parse", "parses", "parsed"),
    ("rank", "ranks", "ranked"), ("read", "reads", "read"),
    ("register", "registers", "registered"), ("remove", "removes", "removed"),
    ("replace", "replaces", "replaced"), ("reset", "resets", "reset"),
    ("resolve", "resolves", "resolved"), ("scale", "scales", "scaled"),
    ("schedule", "schedules", "scheduled"), ("select", "selects", "selected"),
    ("send", "sends", "sent"), ("skip", "skips", "skipped"), ("sort", "sorts", "sorted"),
    ("split", "splits", "split"), ("store", "stores", "stored"), ("track", "tracks", "tracked"),
    ("update", "updates", "updated"), ("validate", "validates", "validated"),
    ("write", "writes", "written"),
)
CLASS_ROLES = (
    "Book", "Buffer", "Builder", "Cache", "Index", "Loader", "Monitor", "Parser", "Planner",
    "Queue", "Registry", "Router", "Scheduler", "Store", "Tracker", "Writer",
)
CONJUNCTIONS = ("because", "so that", "when", "unless", "before", "after", "while", "since", "if")
FRACTIONS = ("5", "25", "75", "1", "2", "01", "05", "125", "001")
IMPORTABLE = ("os", "sys", "math", "json", "time", "logging", "re")
# Names for a new number: a quantity, or one qualified by an adjective ("cached_total").
NUMBER_NAMES = (*QUANTITIES, *(f"{adjective}_{quantity}"
                               for adjective in ADJECTIVES[:10] for quantity in QUANTITIES))


def plural(noun: str) -> str:
    """Return the English plural of a regular noun."""
    if noun.endswith("y") and noun[-2] not in "aeiou":
        return noun[:-1] + "ies"
    if noun.endswith(("s", "x", "ch", "sh")):
        return noun + "es"
    return noun + "s"


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _camel(*words: str) -> str:
    return "".join(part.capitalize() for word in words for part in word.split("_"))


# --- grammar weights -------------------------------------------------------------------------
#
# Each choice point draws a form from its table with probability weight / (sum of weights), by
# SplitMix64.weighted; integer weights, so the draw is exact on every platform. Some forms need
# what the scope may lack (a list to loop over, a map to update): then the writer falls back to
# the forms after the chosen one, in the order written here, and writes the first that fits.
# So a weight is how often a form is *chosen*; forms with needs are written a little less often
# than that, and the forms they fall back to a little more. The comments name each fallback.
# Yes/no choices stay inline as rng.chance(percent).

NOUN_PHRASE_FORMS = {"each": 1, "every": 1, "indefinite": 1, "plural": 1, "definite": 2}
CLAUSE_FORMS = {"present": 1, "modal": 1, "passive": 1, "negated": 1, "described": 1}
# round: 8, 100; decimal: 3.25; large: 11 to 4096; tiny: 1e-6
NUMBER_FORMS = {"round": 5, "decimal": 3, "large": 1, "tiny": 1}
TEXT_LITERAL_FORMS = {"adjective": 1, "file_name": 1, "key": 1, "phrase": 1}
NUM_EXPR_FORMS = {
    "operand": 6,  # a name in scope, an attribute, a constant or a literal
    "length": 2,  # len(collection); without a collection, falls back to arithmetic
    "arithmetic": 3,
    "extreme": 1,  # max(...) or min(...)
    "math": 1,  # math.sqrt(...) and kin, or round(...) when math is not imported
    "sum": 1,  # sum of a list of numbers or of an attribute; else falls back to a call
    "call": 1,  # an earlier function returning a number, or time.time(); else a lookup
    "lookup": 1,  # mapping.get(key, 0); without a map, an operand after all
}
TEXT_EXPR_FORMS = {
    "attribute": 2,  # obj.name; at any depth, when an object in scope has a text attribute
    "name": 2,  # a text in scope or a literal; every form but attribute at depth >= 1
    "method": 2,  # text.strip() and kin; without a text in scope, a format
    "library": 1,  # os.path.join, re.sub, json.dumps, os.environ.get; else a format
    "format": 1,  # f"count={count}"; without a number in scope, a literal
}
BOOL_EXPR_FORMS = {
    "compare": 5,  # a number against a number expression
    "flag": 1,  # a flag or a flag attribute, maybe negated
    "truthiness": 1,  # a collection, maybe negated
    "membership": 1,  # key in mapping
    "text_test": 1,  # text.startswith(...), or os.path.exists(text)
    "combined": 1,  # two conditions joined by and/or; below the top level, a compare
}
STATEMENT_FORMS = {
    "comment": 2,  # a comment line, then another statement
    "new_number": 3,
    "update_number": 2,  # total += ...; without an assignable number, a branch
    "branch": 2,  # if / elif / else; where nesting stops, a loop
    "loop": 3,  # for over a collection in scope; without one or where nesting stops, a list
    "derived_list": 1,  # a sorted copy or a filtered comprehension; without a list, a map
    "new_map": 1,  # always fits: where every fallback above ends
    "update_map": 1,  # counts[key] = counts.get(key, 0) + ...; without a map, a report
    "report": 1,  # a log line or print; always fits
    "retry_loop": 1,  # while attempt < bound; where nesting stops, a try block
    "try_block": 1,  # where nesting stops, a guard
    "guard": 2,  # raise ValueError on a non-positive number; without one, a report
}
# What an `except` does: re-raise; log (when logging is imported, else a reset); reset a number
# (without one, `return None`).
HANDLER_FORMS = {"raise": 1, "log": 1, "reset": 1}
FIRST_PARAMETER_KINDS = {"objs": 2, "nums": 1, "texts": 1}  # a function's leading collection
PARAMETER_KINDS = {"num": 3, "text": 1, "flag": 1}
AUGMENTED_ASSIGNMENTS = {"+=": 2, "-=": 1, "*=": 1}
LOOP_EXITS = {"continue": 2, "break": 1}
LOG_LEVELS = {"debug": 1, "info": 2, "warning": 1}


def _choose_form(rng: SplitMix64, table: dict[str, int]) -> tuple[str, ...]:
    """Draw a form by weight; return it and the forms after it, which it falls back to in order."""
    forms = tuple(table)
    return forms[forms.index(rng.weighted(table)):]


# --- English -------------------------------------------------------------------------------


def _noun_phrase(rng: SplitMix64) -> tuple[str, bool]:
    """Return a noun phrase and whether it is plural."""
    noun = rng.choice(ENTITIES + QUANTITIES)
    adjective = rng.choice(ADJECTIVES) + " " if rng.chance(40) else ""
    form = rng.weighted(NOUN_PHRASE_FORMS)
    if form == "each":
        return f"each {adjective}{noun}", False
    if form == "every":
        return f"every {adjective}{noun}", False
    if form == "indefinite":
        word = adjective or noun
        return f"{_article(word)} {adjective}{noun}", False
    if form == "plural":
        return f"the {adjective}{plural(noun)}", True
    return f"the {adjective}{noun}", False


def _clause(rng: SplitMix64) -> str:
    subject, is_plural = _noun_phrase(rng)
    base, third, participle = rng.choice(VERBS)
    obj, _ = _noun_phrase(rng)
    form = rng.weighted(CLAUSE_FORMS)
    if form == "present":
        return f"{subject} {base if is_plural else third} {obj}"
    if form == "modal":
        return f"{subject} {rng.choice(('must', 'should', 'can', 'may', 'will'))} {base} {obj}"
    if form == "passive":
        return f"{subject} {'are' if is_plural else 'is'} {participle}"
    if form == "negated":
        negation = "do not" if is_plural else "does not"
        return f"{subject} {negation} {base} {obj}"
    return f"{subject} {'are' if is_plural else 'is'} {rng.choice(ADJECTIVES)}"


def sentence(rng: SplitMix64) -> str:
    """Return one plain English sentence built from the vocabulary."""
    text = _clause(rng)
    if rng.chance(45):
        text += f" {rng.choice(CONJUNCTIONS)} {_clause(rng)}"
    return text[0].upper() + text[1:] + "."


def purpose_phrase(rng: SplitMix64) -> str:
    """A short phrase that says what a record is for."""
    base, _, participle = rng.choice(VERBS)
    return rng.choice((
        f"as {participle} by the {rng.choice(ENTITIES)} {rng.choice(CLASS_ROLES).lower()}",
        f"that the {rng.choice(ENTITIES)} {rng.choice(CLASS_ROLES).lower()} will {base}",
        f"from the {rng.choice(ADJECTIVES)} {plural(rng.choice(ENTITIES))}",
    ))


# --- code model ------------------------------------------------------------------------------


@dataclass
class _Var:
    """A name in scope and what it holds, so later code uses it the way it was defined."""

    name: str
    kind: str  # "num" | "nums" | "obj" | "objs" | "text" | "texts" | "map" | "flag" | "self"
    entity: str = ""  # for "obj" and "objs": whose attributes it carries; for "self": the class
    default: str = ""  # for parameters: the default value's source text, or ""
    assignable: bool = True  # loop variables are read, not reassigned
    uses: int = field(default=0, compare=False)  # how often later code has read it


@dataclass
class _Function:
    """A defined function or method, so later code can call it with matching arguments."""

    name: str
    params: list[_Var]
    returns: _Var | None
    owner: str = ""  # the class name for methods; "" for module functions


@dataclass
class _Scope:
    variables: list[_Var] = field(default_factory=list)

    def child(self) -> _Scope:
        return _Scope(list(self.variables))

    def of_kind(self, *kinds: str) -> list[_Var]:
        return [var for var in self.variables if var.kind in kinds]

    def pick(self, rng: SplitMix64, variables: list[_Var]) -> _Var:
        """Choose a variable, favouring names not read yet, then the innermost ones."""
        unused = [var for var in variables if var.uses == 0]
        if unused and rng.chance(65):
            chosen = unused[-1] if rng.chance(50) else rng.choice(unused)
        elif len(variables) > 2 and rng.chance(50):
            chosen = rng.choice(variables[-2:])
        else:
            chosen = rng.choice(variables)
        chosen.uses += 1
        return chosen

    def names(self) -> set[str]:
        return {var.name.split(".")[-1] for var in self.variables}

    def add(self, var: _Var) -> _Var:
        self.variables.append(var)
        return var


class _ModuleWriter:
    """Writes one module; keeps everything the module defined so later code can refer to it."""

    def __init__(self, rng: SplitMix64) -> None:
        self.rng = rng
        self.typed = rng.chance(50)  # one annotation style per module, as real code has
        # Modules the code may use; write() imports those it did use (and now and then one more).
        self.imports = sorted({rng.choice(IMPORTABLE) for _ in range(rng.between(2, 5))})
        self.use_dataclass = rng.chance(55)
        self.attributes: dict[str, list[_Var]] = {}  # entity -> the attributes its objects have
        self.constants: list[_Var] = []
        self.dataclasses: list[str] = []  # entities given a @dataclass, usable as annotations
        self.functions: list[_Function] = []
        # Each module is about a few things; coming back to them is what makes it cohere.
        topics = list(ENTITIES)
        rng.shuffle(topics)
        self.topics = topics[: rng.between(2, 3)]

    # --- names and literals

    def entity_attributes(self, entity: str) -> list[_Var]:
        """The attributes of an entity, fixed the first time it is used in this module."""
        if entity not in self.attributes:
            names = list(QUANTITIES)
            self.rng.shuffle(names)
            attrs = [_Var(name, "num") for name in names[: self.rng.between(2, 3)]]
            if self.rng.chance(60):
                attrs.append(_Var(self.rng.choice(TEXT_NAMES), "text"))
            if self.rng.chance(30):
                attrs.append(_Var(self.rng.choice(FLAG_NAMES), "flag"))
            self.attributes[entity] = attrs
        return self.attributes[entity]

    def attribute(self, obj: _Var, kind: str = "num") -> str:
        """`obj.attr` for one of the object's attributes of that kind, or "" if it has none."""
        attrs = [a for a in self.entity_attributes(obj.entity) if a.kind == kind]
        return f"{obj.name}.{self.rng.choice(attrs).name}" if attrs else ""

    def fresh_name(self, scope: _Scope, candidates: Sequence[str]) -> str:
        taken = scope.names() | {f.name for f in self.functions} | set(ENTITIES)
        for _ in range(8):
            name = self.rng.choice(candidates)
            if name not in taken:
                return name
        return f"{self.rng.choice(candidates)}_{self.rng.between(2, 9)}"

    def number(self) -> str:
        form = self.rng.weighted(NUMBER_FORMS)
        if form == "round":
            return str(self.rng.choice((0, 1, 2, 3, 4, 5, 8, 10, 16, 32, 60, 100, 128, 1000)))
        if form == "decimal":
            return f"{self.rng.below(10)}.{self.rng.choice(FRACTIONS)}"
        if form == "large":
            return str(self.rng.between(11, 4096))
        return f"1e-{self.rng.between(2, 9)}"

    def text_literal(self) -> str:
        form = self.rng.weighted(TEXT_LITERAL_FORMS)
        if form == "adjective":
            return f'"{self.rng.choice(ADJECTIVES)}"'
        if form == "file_name":
            return f'"{plural(self.rng.choice(self.topics))}.{self.rng.choice(("json", "csv"))}"'
        if form == "key":
            return f'"{self.rng.choice(self.topics)}_{self.rng.choice(QUANTITIES)}"'
        return f'"{self.rng.choice(ADJECTIVES)} {plural(self.rng.choice(ENTITIES))}"'

    def annotation(self, var: _Var) -> str:
        if var.kind in ("obj", "objs"):
            inner = _camel(var.entity) if var.entity in self.dataclasses else "object"
            return inner if var.kind == "obj" else f"list[{inner}]"
        return {
            "num": "float", "nums": "list[float]", "text": "str", "texts": "list[str]",
            "map": "dict[str, float]", "flag": "bool",
        }[var.kind]

    # --- expressions

    def num_operand(self, scope: _Scope) -> str:
        """A number already named in scope (a variable, an attribute, a constant) if any."""
        rng = self.rng
        named = scope.of_kind("num", "obj")
        if named and rng.chance(85):
            var = scope.pick(rng, named)
            return self.attribute(var) if var.kind == "obj" else var.name
        if self.constants and rng.chance(50):
            return rng.choice(self.constants).name
        return self.number()

    def num_expr(self, scope: _Scope, depth: int = 0) -> str:
        rng = self.rng
        lists = scope.of_kind("nums", "objs", "texts")
        # The chosen form, then its fallbacks: each test below is "this form, or an earlier
        # one that did not fit", in NUM_EXPR_FORMS order.
        forms = _choose_form(rng, NUM_EXPR_FORMS)
        if depth >= 2 or "operand" in forms:
            return self.num_operand(scope)
        if "length" in forms and lists:
            return f"len({scope.pick(rng, lists).name})"
        if "arithmetic" in forms:
            # Uniform over the tuple: + and * twice as often as -, / and //.
            op = rng.choice(("+", "-", "*", "/", "*", "+", "//"))
            right = self.number() if rng.chance(35) else self.num_expr(scope, depth + 1)
            text = f"{self.num_operand(scope)} {op} {right}"
            return f"({text})" if depth > 0 else text
        if "extreme" in forms:
            func = rng.choice(("max", "min"))
            return f"{func}({self.num_operand(scope)}, {self.num_expr(scope, depth + 1)})"
        if "math" in forms:
            if "math" in self.imports:
                func = rng.choice(("math.sqrt", "math.log1p", "math.exp", "math.floor"))
                return f"{func}({self.num_expr(scope, depth + 1)})"
            return f"round({self.num_expr(scope, depth + 1)}, {rng.between(1, 4)})"
        if "sum" in forms:
            number_lists = scope.of_kind("nums")
            object_lists = scope.of_kind("objs")
            if number_lists and rng.chance(50):
                return f"sum({scope.pick(rng, number_lists).name})"
            if object_lists:
                items = scope.pick(rng, object_lists)
                element = _Var(items.entity, "obj", items.entity)
                return f"sum({self.attribute(element)} for {element.name} in {items.name})"
        if "call" in forms:
            call = self.call_expr(scope, "num")
            if call:
                return call
            if "time" in self.imports:
                return rng.choice(("time.time()", "time.perf_counter()", "time.monotonic()"))
        maps = scope.of_kind("map")
        if maps:  # "lookup", chosen or fallen back to
            return f"{scope.pick(rng, maps).name}.get({self.text_expr(scope, 1)}, 0)"
        return self.num_operand(scope)

    def text_expr(self, scope: _Scope, depth: int = 0) -> str:
        rng = self.rng
        texts = scope.of_kind("text")
        objs = [o for o in scope.of_kind("obj") if self.attribute(o, "text")]
        forms = _choose_form(rng, TEXT_EXPR_FORMS)  # the chosen form, then its fallbacks
        if "attribute" in forms and objs:
            return self.attribute(scope.pick(rng, objs), "text")
        if depth >= 1 or "name" in forms:
            if texts and rng.chance(70):
                return scope.pick(rng, texts).name
            return self.text_literal()
        if "method" in forms and texts:
            method = rng.choice(("strip()", "lower()", "upper()", 'replace("_", " ")'))
            return f"{scope.pick(rng, texts).name}.{method}"
        if "library" in forms and texts:
            text = scope.pick(rng, texts).name
            if "os" in self.imports and rng.chance(50):
                return f"os.path.join({text}, {self.text_literal()})"
            if "re" in self.imports and rng.chance(50):
                return f're.sub(r"\\s+", " ", {text})'
            if "json" in self.imports:
                return f"json.dumps({text})"
            if "os" in self.imports:
                return f'os.environ.get("{text.split(".")[-1].upper()}", {text})'
        nums = scope.of_kind("num")
        if nums:  # "format", chosen or fallen back to
            var = scope.pick(rng, nums)
            return f'f"{var.name.split(".")[-1].replace("_", " ")}={{{var.name}}}"'
        return self.text_literal()

    def bool_expr(self, scope: _Scope, depth: int = 0) -> str:
        rng = self.rng
        forms = _choose_form(rng, BOOL_EXPR_FORMS)  # the chosen form, then its fallbacks
        flags = scope.of_kind("flag")
        collections = scope.of_kind("nums", "objs", "texts", "map")
        flagged = [o for o in scope.of_kind("obj") if self.attribute(o, "flag")]
        if "compare" in forms:
            op = rng.choice((">", "<", ">=", "<=", "==", "!="))
            return f"{self.num_operand(scope)} {op} {self.num_expr(scope, 1)}"
        if "flag" in forms and (flags or flagged):
            if flagged and (not flags or rng.chance(50)):
                name = self.attribute(scope.pick(rng, flagged), "flag")
            else:
                name = scope.pick(rng, flags).name
            return ("not " if rng.chance(30) else "") + name
        if "truthiness" in forms and collections:
            return ("not " if rng.chance(60) else "") + scope.pick(rng, collections).name
        if "membership" in forms and scope.of_kind("map"):
            return f"{self.text_expr(scope, 1)} in {scope.pick(rng, scope.of_kind('map')).name}"
        if "text_test" in forms and scope.of_kind("text"):
            if "os" in self.imports and rng.chance(30):
                return f'os.path.exists({scope.pick(rng, scope.of_kind("text")).name})'
            method = rng.choice(("startswith", "endswith"))
            return f'{scope.pick(rng, scope.of_kind("text")).name}.{method}({self.text_literal()})'
        if depth == 0:  # "combined", chosen or fallen back to
            joiner = rng.choice(("and", "or"))
            return f"{self.bool_expr(scope, 1)} {joiner} {self.bool_expr(scope, 1)}"
        return f"{self.num_operand(scope)} > {self.num_expr(scope, 2)}"

    def call_expr(self, scope: _Scope, kind: str) -> str:
        """A call to an earlier function returning `kind`, with arguments from scope."""
        candidates = [f for f in self.functions if f.returns and f.returns.kind == kind]
        if not candidates:
            return ""
        function = self.rng.choice(candidates)
        args = []
        for param in function.params:
            if param.default and self.rng.chance(60):
                continue
            arg = self.argument_for(scope, param)
            if not arg:
                return ""
            args.append(f"{param.name}={arg}" if param.default else arg)
        if function.owner:
            if not [v for v in scope.of_kind("self") if v.entity == function.owner]:
                return ""
            return f"self.{function.name}({', '.join(args)})"
        return f"{function.name}({', '.join(args)})"

    def argument_for(self, scope: _Scope, param: _Var) -> str:
        matching = [v for v in scope.of_kind(param.kind) if v.entity == param.entity]
        if matching:
            return scope.pick(self.rng, matching).name
        if param.kind == "num":
            return self.number()
        if param.kind == "text":
            return self.text_literal()
        if param.kind == "flag":
            return self.rng.choice(("True", "False"))
        return ""

    # --- statements

    def comment(self, scope: _Scope) -> str:
        """A comment line: a plain sentence, or a remark about a name in scope."""
        rng = self.rng
        named = [v for v in scope.variables if v.kind != "self"]
        if named and rng.chance(55):
            var = scope.pick(rng, named)
            name, noun, other = var.name, rng.choice(self.topics), rng.choice(ENTITIES)
            changing = (f"Read {name} only once because it can change while "
                        f"{_article(noun)} {noun} is {rng.choice(VERBS)[2]}.")
            templates = [
                changing,
                f"Note that {name} comes from the {rng.choice(ADJECTIVES)} {noun}.",
            ]
            if var.kind in ("nums", "objs", "texts", "map"):
                templates += [
                    f"{name} may be empty here, so the loop below might not run.",
                    f"Keep {name} as it is; the caller still holds a reference to it.",
                ]
            if var.kind == "num":
                templates += [
                    f"{name} is counted once per {noun}, not once per {other}.",
                    f"A zero {name} would divide by zero below, so guard against it.",
                ]
            return "# " + rng.choice(templates)
        return "# " + sentence(rng)

    def block(self, scope: _Scope, level: int, n_statements: int, out: list[str]) -> None:
        """Append a block of statements at an indentation level; new names join the scope."""
        for _ in range(n_statements):
            self.statement(scope, level, out)

    def statement(self, scope: _Scope, level: int, out: list[str]) -> None:
        """Append one statement (possibly compound, possibly preceded by a comment)."""
        rng = self.rng
        pad = "    " * level
        nums = scope.of_kind("num")
        nested = level < 3 and rng.chance(100 - 25 * level)  # deep nesting grows rarer
        # The chosen form, then its fallbacks: each test below is "this form, or an earlier
        # one that did not fit", in STATEMENT_FORMS order.
        forms = _choose_form(rng, STATEMENT_FORMS)
        if "comment" in forms:
            out.append(pad + self.comment(scope))
            self.statement(scope, level, out)  # a comment is never a block's last line
        elif "new_number" in forms:
            name = self.fresh_name(scope, NUMBER_NAMES)
            out.append(f"{pad}{name} = {self.num_expr(scope)}")
            scope.add(_Var(name, "num"))
        elif "update_number" in forms and [v for v in nums if v.assignable]:
            target = scope.pick(rng, [v for v in nums if v.assignable])
            op = rng.weighted(AUGMENTED_ASSIGNMENTS)
            out.append(f"{pad}{target.name} {op} {self.num_expr(scope, 1)}")
        elif "branch" in forms and nested:
            # Names bound inside a branch stay visible after it, as they do in Python.
            out.append(f"{pad}if {self.bool_expr(scope)}:")
            self.block(scope, level + 1, rng.between(1, 2), out)
            if rng.chance(20):
                out.append(f"{pad}elif {self.bool_expr(scope)}:")
                self.block(scope, level + 1, 1, out)
            if rng.chance(30):
                out.append(f"{pad}else:")
                self.block(scope, level + 1, rng.between(1, 2), out)
        elif "loop" in forms and nested and scope.of_kind("nums", "objs", "texts"):
            self.loop(scope, level, out)
        elif "derived_list" in forms and scope.of_kind("objs", "nums"):
            self.derived_list(scope, pad, out)
        elif "new_map" in forms:
            entity = rng.choice(self.topics)
            name = self.fresh_name(scope, [f"{q}_by_{entity}" for q in QUANTITIES]
                                   + [f"{plural(entity)}_by_{t}" for t in TEXT_NAMES])
            out.append(f"{pad}{name} = {{}}")
            scope.add(_Var(name, "map"))
        elif "update_map" in forms and scope.of_kind("map"):
            target = scope.pick(rng, scope.of_kind("map"))
            key = self.text_expr(scope)
            out.append(f"{pad}{target.name}[{key}] = {target.name}.get({key}, 0) + "
                       f"{self.num_expr(scope, 1)}")
        elif "report" in forms:
            self.report(scope, pad, out)
        elif "retry_loop" in forms and nested:
            self.retry_loop(scope, level, out)
        elif "try_block" in forms and nested:
            self.try_block(scope, level, out)
        else:  # "guard", chosen or fallen back to
            checked = [v for v in nums if "." not in v.name and v.assignable]
            if checked:
                name = scope.pick(rng, checked).name
                out.append(f"{pad}if {name} {rng.choice(('<', '<='))} 0:")
                out.append(f'{pad}    raise ValueError(f"{name} must be positive, got {{{name}}}")')
            else:
                self.report(scope, pad, out)

    def loop(self, scope: _Scope, level: int, out: list[str]) -> None:
        """A for loop over a collection in scope; the element is named after the collection."""
        rng = self.rng
        pad = "    " * level
        source = scope.pick(rng, scope.of_kind("nums", "objs", "texts"))
        element_kind = {"nums": "num", "objs": "obj", "texts": "text"}[source.kind]
        element_name = source.entity or {"nums": "value", "texts": "line"}[source.kind]
        if element_name in scope.names():
            element_name = f"{element_name}_item"
        inner = scope.child()
        if rng.chance(25):
            index = self.fresh_name(scope, ["index", "position", "rank", "row_index"])
            out.append(f"{pad}for {index}, {element_name} in enumerate({source.name}):")
            inner.add(_Var(index, "num", assignable=False))
        else:
            out.append(f"{pad}for {element_name} in {source.name}:")
        inner.add(_Var(element_name, element_kind, source.entity, assignable=False))
        if rng.chance(30):
            out.append(f"{pad}    if {self.bool_expr(inner)}:")
            out.append(f"{pad}        {rng.weighted(LOOP_EXITS)}")
        self.block(inner, level + 1, rng.between(1, 3), out)
        # Names the body bound stay visible after the loop; the loop's own names do not.
        for var in inner.variables:
            if var.assignable and var not in scope.variables:
                scope.add(var)

    def derived_list(self, scope: _Scope, pad: str, out: list[str]) -> None:
        """A sorted copy or a filtered comprehension of a list in scope."""
        rng = self.rng
        source = scope.pick(rng, scope.of_kind("objs", "nums"))
        item = source.entity or "value"
        name = self.fresh_name(scope, [f"{adjective}_{plural(item)}" for adjective
                                       in ("valid", "kept", "selected", "sorted", "large")])
        element = _Var(item, "obj" if source.kind == "objs" else "num", source.entity)
        value = self.attribute(element) if source.kind == "objs" else item
        if name.startswith("sorted"):
            key = f", key=lambda {item}: {value}" if source.kind == "objs" else ""
            reverse = ", reverse=True" if rng.chance(30) else ""
            out.append(f"{pad}{name} = sorted({source.name}{key}{reverse})")
        else:
            condition = f"{value} {rng.choice(('>', '<', '>='))} {self.num_operand(scope)}"
            out.append(f"{pad}{name} = [{item} for {item} in {source.name} if {condition}]")
        scope.add(_Var(name, source.kind, source.entity))

    def retry_loop(self, scope: _Scope, level: int, out: list[str]) -> None:
        """A counted while loop: counter, bound from scope, increment as the last line."""
        rng = self.rng
        pad = "    " * level
        counter = self.fresh_name(scope, ["attempt", "retries", "tries", "round_index"])
        bounds = self.constants or scope.of_kind("num")
        bound = rng.choice(bounds).name if bounds and rng.chance(70) else self.number()
        out.append(f"{pad}{counter} = 0")
        out.append(f"{pad}while {counter} < {bound}:")
        inner = scope.child()
        inner.add(_Var(counter, "num", assignable=False))
        self.block(inner, level + 1, rng.between(1, 2), out)
        out.append(f"{pad}    {counter} += 1")
        scope.add(_Var(counter, "num"))

    def try_block(self, scope: _Scope, level: int, out: list[str]) -> None:
        rng = self.rng
        pad = "    " * level
        out.append(f"{pad}try:")
        self.block(scope, level + 1, rng.between(1, 2), out)
        error = rng.choice(("KeyError", "ValueError", "ZeroDivisionError", "OSError",
                            "(KeyError, IndexError)", "(TypeError, ValueError)"))
        out.append(f"{pad}except {error} as error:")
        forms = _choose_form(rng, HANDLER_FORMS)  # the chosen form, then its fallbacks
        assignable = [v for v in scope.of_kind("num") if v.assignable]
        if "raise" in forms:
            message = f"could not {rng.choice(VERBS)[0]} {rng.choice(self.topics)}"
            out.append(f'{pad}    raise RuntimeError("{message}") from error')
        elif "log" in forms and "logging" in self.imports:
            out.append(f'{pad}    logger.warning("skipping {rng.choice(self.topics)}: %s", error)')
        elif assignable:  # "reset", chosen or fallen back to
            out.append(f"{pad}    {scope.pick(rng, assignable).name} = {self.number()}")
        else:
            out.append(f"{pad}    return None")

    def report(self, scope: _Scope, pad: str, out: list[str]) -> None:
        """A log line (or print) naming a value in scope."""
        named = [v for v in scope.variables if v.kind in ("num", "text")]
        if not named:
            out.append(f"{pad}{self.fresh_name(scope, list(QUANTITIES))} = {self.number()}")
            return
        var = scope.pick(self.rng, named)
        label = f"{self.rng.choice(VERBS)[2]} {var.name.split('.')[-1].replace('_', ' ')}"
        if "logging" in self.imports:
            level = self.rng.weighted(LOG_LEVELS)
            out.append(f'{pad}logger.{level}("{label}: %s", {var.name})')
        elif "sys" in self.imports:
            out.append(f'{pad}print(f"{label}: {{{var.name}}}", file=sys.stderr)')
        else:
            out.append(f'{pad}print(f"{label}: {{{var.name}}}")')

    # --- definitions

    def parameters(self, scope: _Scope, count: int) -> list[_Var]:
        """Choose parameters: usually a collection first, then numbers, texts and flags."""
        rng = self.rng
        params: list[_Var] = []
        entity = rng.choice(self.topics)
        if rng.chance(75):
            kind = rng.weighted(FIRST_PARAMETER_KINDS)
            name = {"objs": plural(entity), "nums": plural(rng.choice(QUANTITIES)),
                    "texts": rng.choice(("lines", "names", "paths", "labels"))}[kind]
            params.append(_Var(name, kind, entity if kind == "objs" else ""))
            if kind == "objs":
                self.entity_attributes(entity)
        while len(params) < count:
            kind = rng.weighted(PARAMETER_KINDS)
            pool = {"num": QUANTITIES, "text": TEXT_NAMES, "flag": FLAG_NAMES}[kind]
            name = rng.choice(pool)
            if name in {p.name for p in params} | scope.names():
                continue
            default = ""
            if kind == "flag":
                default = "False"
            elif (params and params[-1].default) or rng.chance(35):
                default = self.number() if kind == "num" else self.text_literal()
                if kind == "num" and self.constants and rng.chance(40):
                    default = rng.choice(self.constants).name
            params.append(_Var(name, kind, default=default))
        return params

    def signature(self, pad: str, name: str, params: list[_Var], returns: _Var | None,
                  method: bool) -> list[str]:
        """The def line, wrapped one parameter per line when it would pass 100 columns."""
        parts = ["self"] if method else []
        for param in params:
            text = param.name
            if self.typed:
                text += f": {self.annotation(param)}"
            if param.default:
                text += f" = {param.default}" if self.typed else f"={param.default}"
            parts.append(text)
        arrow = ""
        if self.typed:
            arrow = f" -> {self.annotation(returns)}" if returns else " -> None"
        line = f"{pad}def {name}({', '.join(parts)}){arrow}:"
        if len(line) <= 100:
            return [line]
        return [f"{pad}def {name}(", *(f"{pad}    {part}," for part in parts), f"{pad}){arrow}:"]

    def docstring(self, pad: str, summary: str, params: list[_Var], returns: _Var | None,
                  out: list[str]) -> None:
        """A docstring: a summary, maybe a sentence more, maybe Args and Returns sections."""
        rng = self.rng
        body: list[str] = []
        if rng.chance(35):
            body += ["", f"{pad}{sentence(rng)}"]
        if params and rng.chance(65):
            body += ["", f"{pad}Args:"]
            for param in params:
                spoken = param.name.replace("_", " ")
                description = {
                    "objs": f"The {plural(param.entity)} to {rng.choice(VERBS)[0]}.",
                    "nums": f"The {spoken} to {rng.choice(VERBS)[0]}.",
                    "texts": f"The {spoken} to {rng.choice(VERBS)[0]}, in order.",
                    "num": f"The {rng.choice(ADJECTIVES)} {spoken}.",
                    "text": f"The {spoken} of the {rng.choice(self.topics)}.",
                    "flag": f"Whether to {rng.choice(VERBS)[0]} {rng.choice(ADJECTIVES)} "
                            f"{plural(rng.choice(self.topics))}.",
                }[param.kind]
                body.append(f"{pad}    {param.name}: {description}")
            if returns:
                body += ["", f"{pad}Returns:",
                         f"{pad}    The {returns.name.split('.')[-1].replace('_', ' ')}."]
        if body:
            out += [f'{pad}"""{summary}', *body, f'{pad}"""']
        else:
            out.append(f'{pad}"""{summary}"""')

    def function(self, level: int, scope: _Scope, owner: str = "") -> list[str]:
        """Write one function (or method of `owner`) and register it for later calls."""
        rng = self.rng
        pad = "    " * level
        params = self.parameters(scope, rng.between(1, 4))
        inner = scope.child()
        for param in params:
            inner.add(param)
        body: list[str] = []
        first = params[0]
        self.block(inner, level + 1, rng.between(2, 5), body)
        new_vars = [v for v in inner.variables if v not in scope.variables
                    and v not in params and v.kind in ("num", "nums", "objs", "map", "text")]
        unread = [v for v in new_vars if v.uses == 0]
        returns = None
        if new_vars and rng.chance(85):
            returns = unread[-1] if unread and rng.chance(70) else rng.choice(new_vars[-3:])
        if returns is None and params and rng.chance(50) and params[0].kind != "flag":
            returns = params[0]
        if returns:
            body.append(f"{pad}    return {returns.name}")
        if first.kind in ("objs", "nums", "texts") and rng.chance(40):
            empty = ""
            if returns:
                empty = {"num": "0", "text": '""', "map": "{}"}.get(returns.kind, "[]")
            body[:0] = [f"{pad}    if not {first.name}:", f"{pad}        return {empty}".rstrip()]
        verb = rng.choice(VERBS)[0]
        if first.kind in ("objs", "nums", "texts"):
            name = f"{verb}_{first.name}"
        elif returns:
            name = f"{verb}_{returns.name.split('.')[-1]}"
        else:
            name = f"{verb}_{rng.choice(self.topics)}"
        if name in {f.name for f in self.functions} | scope.names():
            name = f"{verb}_{rng.choice(ADJECTIVES)}_{first.entity or first.name}"
        subject = f"the {first.name.replace('_', ' ')}" if first.kind != "flag" else "it"
        summary = f"{verb.capitalize()} {subject}"
        if returns:
            summary += f" and return the {returns.name.split('.')[-1].replace('_', ' ')}."
        else:
            summary += f" {rng.choice(('in place', 'for each ' + rng.choice(self.topics)))}."
        lines = self.signature(pad, name, params, returns, method=bool(owner))
        self.docstring(pad + "    ", summary, params, returns, lines)
        lines.extend(body)
        self.functions.append(_Function(name, params, returns, owner))
        return lines

    def dataclass_definition(self, entity: str) -> list[str]:
        self.dataclasses.append(entity)
        lines = ["@dataclass", f"class {_camel(entity)}:",
                 f'    """One {entity} {purpose_phrase(self.rng)}."""', ""]
        for i, attr in enumerate(self.entity_attributes(entity)):
            kind = {"num": "float", "text": "str", "flag": "bool"}[attr.kind]
            default = ""
            if i >= 2 or attr.kind != "num":  # fields without defaults must come first
                default = {"num": " = 0.0", "text": ' = ""', "flag": " = False"}[attr.kind]
            lines.append(f"    {attr.name}: {kind}{default}")
        return lines

    def class_definition(self) -> list[str]:
        """A class whose __init__ sets attributes that its methods then read and update."""
        rng = self.rng
        entity = rng.choice(self.topics)
        class_name = _camel(entity, rng.choice(CLASS_ROLES))
        self.entity_attributes(entity)
        lines = [f"class {class_name}:", f'    """{sentence(rng)}"""', ""]
        params = self.parameters(_Scope(), rng.between(1, 3))
        scope = _Scope([_Var("self", "self", class_name)])
        init_body: list[str] = []
        for param in params:
            init_body.append(f"        self.{param.name} = {param.name}")
            scope.add(_Var(f"self.{param.name}", param.kind, param.entity))
        collection = f"self.{plural(entity)}"
        if collection not in {v.name for v in scope.variables}:
            hint = f": list[{_camel(entity)}]" if self.typed and entity in self.dataclasses else ""
            init_body.append(f"        {collection}{hint} = []")
            scope.add(_Var(collection, "objs", entity))
        if rng.chance(50):
            counter = f"self.{rng.choice(QUANTITIES)}"
            if counter not in {v.name for v in scope.variables}:
                init_body.append(f"        {counter} = 0")
                scope.add(_Var(counter, "num"))
        lines += self.signature("    ", "__init__", params, None, method=True)
        lines += init_body
        for _ in range(rng.between(1, 3)):
            lines.append("")
            lines += self.function(1, scope, owner=class_name)
        return lines

    def main_function(self) -> list[str]:
        """A main() that builds sample inputs and calls what the module defined."""
        rng = self.rng
        lines = ["def main() -> None:" if self.typed else "def main():"]
        scope = _Scope()
        for entity in self.topics:
            if entity in self.dataclasses and rng.chance(70):
                items = []
                for _ in range(rng.between(1, 3)):
                    fields = [f"{attr.name}={self.number() if attr.kind == 'num' else 'True'}"
                              for attr in self.attributes[entity][:2]]
                    items.append(f"{_camel(entity)}({', '.join(fields)})")
                name = plural(entity)
                lines.append(f"    {name} = [{', '.join(items)}]")
                scope.add(_Var(name, "objs", entity))
        for function in [f for f in self.functions if not f.owner][-3:]:
            args = []
            for param in function.params:
                if param.default:
                    continue
                arg = self.argument_for(scope, param)
                if not arg:
                    if param.kind == "nums":
                        arg = f"[{', '.join(self.number() for _ in range(3))}]"
                    elif param.kind == "texts":
                        arg = f"[{self.text_literal()}, {self.text_literal()}]"
                    else:
                        arg = "[]"
                args.append(arg)
            call = f"{function.name}({', '.join(args)})"
            if function.returns:
                result = self.fresh_name(scope, ["result", "outcome", "summary", "answer"])
                lines.append(f"    {result} = {call}")
                lines.append(f'    print("{function.name}:", {result})')
                scope.add(_Var(result, function.returns.kind))
            else:
                lines.append(f"    {call}")
        return lines

    def write(self) -> str:
        """Return the whole module as text."""
        rng = self.rng
        if rng.chance(60):
            details = " ".join(sentence(rng) for _ in range(rng.between(1, 3)))
            summary = sentence(rng)  # drawn after the details: the order of draws fixes the bytes
            wrapped = textwrap.wrap(details, 96, break_long_words=False, break_on_hyphens=False)
            lines = [f'"""{summary}', "", *wrapped, '"""', ""]
        else:
            lines = [f'"""{sentence(rng)}"""', ""]
        header = lines
        lines = []
        if "logging" in self.imports:
            lines.append("logger = logging.getLogger(__name__)")
        for _ in range(rng.between(0, 3)):
            name = f"{rng.choice(('MAX', 'MIN', 'DEFAULT'))}_{rng.choice(QUANTITIES).upper()}"
            if name not in {c.name for c in self.constants}:
                lines.append(f"{name} = {self.number()}")
                self.constants.append(_Var(name, "num"))
        if self.use_dataclass:
            for entity in self.topics[: rng.between(1, 2)]:
                lines += ["", "", *self.dataclass_definition(entity)]
        for _ in range(rng.between(1, 3)):
            lines += ["", ""]
            lines += self.class_definition() if rng.chance(30) else self.function(0, _Scope())
        if rng.chance(50) and any(not f.owner for f in self.functions):
            lines += ["", "", *self.main_function()]
            lines += ["", "", 'if __name__ == "__main__":', "    main()"]
        code = "\n".join(lines)
        imported = [m for m in self.imports if f"{m}." in code or rng.chance(15)]
        header += [f"import {module}" for module in imported]
        if self.dataclasses:
            header.append("from dataclasses import dataclass")
        if imported or self.dataclasses:
            header.append("")
        text = "\n".join(header) + "\n" + code
        while "\n\n\n\n" in text:  # at most two blank lines in a row, as PEP 8 has it
            text = text.replace("\n\n\n\n", "\n\n\n")
        return text.strip("\n") + "\n"


# --- public API ------------------------------------------------------------------------------


def _document_seed(seed: int, index: int) -> int:
    # Each document has its own stream, so a corpus of n documents is a prefix of a larger one.
    return SplitMix64(((seed & 0xFFFFFFFF) << 32) | (index & 0xFFFFFFFF)).next_u64()


def build_document(seed: int, index: int) -> str:
    """Return document `index` of the corpus with this seed (ASCII Python-like source)."""
    return _ModuleWriter(SplitMix64(_document_seed(seed, index))).write()


def build_corpus(n_documents: int, seed: int = 0) -> list[str]:
    """Return n_documents deterministic Python-like modules: same arguments, same bytes."""
    return [build_document(seed, index) for index in range(n_documents)]


def build_splits(n_documents: int, seed: int = 0, val_fraction: float = 0.1) -> CorpusSplits:
    """Build the code corpus, split it by document, and return both splits as token tensors."""
    return splits_from_documents(build_corpus(n_documents, seed), val_fraction, seed)
