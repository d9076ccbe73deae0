"""Streaming dialogues, word by word: chit-chat, a grocery list to remember, rock-paper-scissors.

Modelled on SirLLM's tasks (Yao et al. 2024). Tokens are whole words of a fixed vocabulary, so
an item to remember is one token and its surprisal is one number. Every dialogue follows from a
splitmix64 stream alone, so the same seed writes the same tokens on every machine.

- chat: a user and a bot talk about people, places, days, pastimes and food. Slot words make
  some tokens hard to predict (a name, a number, a place), so the filler carries information
  too. A conversation keeps coming back to a few people, places and foods (its cast), and the
  bot often echoes what it heard, so copying from context pays off.
- grocery: early on the user asks the bot to remember one item; after many turns of chat, in
  which other items come up in other frames ("the market has figs on sale"), the user asks
  which item it was, and the bot's answer ends with it. The choice is multiple: the item and
  three items the conversation never mentioned, compared by the model's probability.
- rps: rounds of rock-paper-scissors against a user who favours one move. Each round is a user
  turn and a bot turn; the bot plays the counter to the user's most frequent move so far.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import torch

from digestlab.data.rng import SplitMix64

# --- vocabulary ------------------------------------------------------------------------------

SLOTS: dict[str, tuple[str, ...]] = {
    "item": (
        "apples", "bananas", "beans", "bread", "butter", "carrots", "cheese", "chicken",
        "coffee", "cookies", "eggs", "figs", "flour", "garlic", "grapes", "honey", "jam",
        "lemons", "lettuce", "milk", "noodles", "oats", "onions", "oranges", "pasta",
        "peaches", "pears", "peppers", "potatoes", "rice", "salmon", "salt", "soap", "soup",
        "spinach", "sugar", "tea", "tofu", "tuna", "yogurt",
    ),
    "name": (
        "anna", "ben", "chloe", "dan", "emma", "finn", "grace", "hugo", "iris", "jack", "kate",
        "leo", "mia", "noah", "olivia", "paul", "quinn", "rosa", "sam", "tara", "uma", "victor",
        "wendy", "zoe",
    ),
    "place": (
        "park", "office", "library", "station", "beach", "gym", "school", "cafe", "museum",
        "garden", "harbor", "cinema", "zoo", "bakery",
    ),
    "day": ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"),
    "time": ("morning", "afternoon", "evening", "night"),
    "weather": ("sunny", "rainy", "windy", "cloudy", "cold", "warm", "snowy", "foggy"),
    "activity": (
        "reading", "running", "cooking", "painting", "swimming", "singing", "hiking", "dancing",
        "fishing", "gardening", "cycling", "knitting",
    ),
    "feeling": ("happy", "tired", "busy", "bored", "calm", "excited", "sleepy", "proud"),
    "number": tuple(str(n) for n in range(2, 31)),
    "move": ("rock", "paper", "scissors"),
}

# What the user says in chat. Slots are {kind}; everything else is a word of the vocabulary.
CHAT = (
    "{name} went to the {place} on {day} .",
    "it was {weather} this {time} .",
    "i spent the {time} {activity} with {name} .",
    "{name} feels {feeling} today .",
    "we met {number} friends at the {place} .",
    "the {place} opens at {number} on {day} .",
    "{name} is good at {activity} .",
    "do you like {activity} ?",
    "how was your {day} ?",
    "{name} and {name} went {activity} on {day} .",
    "i waited {number} minutes at the {place} .",
    "my {day} was {weather} and i felt {feeling} .",
)
# Chat in which an item comes up without being the one to buy: the grocery task's distractors.
MENTIONS = (
    "the market has {item} on sale .",
    "i already have {item} at home .",
    "{name} does not like {item} .",
    "we ate {item} on {day} .",
)
# What the bot says back to chat; or, this often, it echoes the user's statement as a question.
ECHO_PERCENT = 50
CAST_PERCENT = 75  # how often a name, place or pastime comes from the conversation's cast
REPLIES = (
    "nice .", "i see .", "tell me more .", "that sounds {feeling} .", "oh , really ?",
    "i like {activity} too .", "good to hear .",
)
GREETINGS = ("hello there .", "hi , how are you ?", "good {time} !")
REMEMBER = (
    "please remember to buy {item} .",
    "do not forget to buy {item} .",
    "i need you to buy {item} later .",
)
ACKNOWLEDGE = ("ok , i will remember .", "sure , noted .")
QUESTION = ("user : what did i ask you to buy ?", "bot : you asked me to buy")  # then the item
RPS_OPENING = ("user : let us play rock paper scissors .", "bot : sure , you start .")
RPS_CLOSING = ("user : i am done now .", "bot : good game .")
OUTCOMES = {1: "i win .", 0: "a draw .", -1: "you win ."}  # from the bot's side
BEATS = {"rock": "paper", "paper": "scissors", "scissors": "rock"}  # the move that beats it

SPECIALS = ("<pad>", "<bos>", "<end>")  # <pad> is id 0, the objectives' padding


def _vocabulary() -> tuple[str, ...]:
    words: list[str] = list(SPECIALS) + ["user", "bot", ":"]
    texts = (*CHAT, *MENTIONS, *REPLIES, *GREETINGS, *REMEMBER, *ACKNOWLEDGE, *QUESTION,
             *RPS_OPENING, *RPS_CLOSING, *OUTCOMES.values())
    for text in texts:
        words.extend(w for w in text.split() if not w.startswith("{"))  # slots come below
    for values in SLOTS.values():
        words.extend(values)
    return tuple(dict.fromkeys(words))  # first occurrence order: fixed by the lists above


VOCAB = _vocabulary()
TOKEN_ID = {word: i for i, word in enumerate(VOCAB)}
PAD, BOS, END = (TOKEN_ID[s] for s in SPECIALS)
VOCAB_SIZE = len(VOCAB)
assert VOCAB_SIZE <= 256, "dialogue words must fit the models' 256-token vocabulary"
ITEM_IDS = tuple(TOKEN_ID[w] for w in SLOTS["item"])
MOVE_IDS = tuple(TOKEN_ID[w] for w in SLOTS["move"])


def encode(text: str) -> list[int]:
    """Token ids of a text of vocabulary words separated by spaces."""
    try:
        return [TOKEN_ID[word] for word in text.split()]
    except KeyError as e:
        raise ValueError(f"{e.args[0]!r} is not a word of the dialogue vocabulary") from None


def decode(ids: list[int] | torch.Tensor) -> str:
    """The words of token ids, separated by spaces."""
    if isinstance(ids, torch.Tensor):
        ids = ids.tolist()
    return " ".join(VOCAB[i] for i in ids)


# --- dialogues -------------------------------------------------------------------------------


Cast = dict[str, tuple[str, ...]]  # the few names, places, pastimes one conversation is about


def cast_of(rng: SplitMix64) -> Cast:
    """Who and what one conversation is mostly about: three people, places and foods, two
    pastimes. They come back in a conversation, so copying from earlier pays off."""
    def few(slot: str, n: int) -> tuple[str, ...]:
        values = list(SLOTS[slot])
        rng.shuffle(values)
        return tuple(values[:n])

    return {"name": few("name", 3), "place": few("place", 3), "activity": few("activity", 2),
            "item": few("item", 3)}


def _fill(rng: SplitMix64, template: str, cast: Cast | None = None, **given: str) -> str:
    """The template with every {slot} replaced: by `given[slot]` where given, else drawn from
    the cast (three times in four, for the slots it has) or from all values of the slot."""
    words = []
    for word in template.split():
        if word.startswith("{"):
            slot = word[1:-1]
            if slot in given:
                word = given[slot]
            elif cast and slot in cast and rng.chance(CAST_PERCENT):
                word = rng.choice(cast[slot])
            else:
                word = rng.choice(SLOTS[slot])
        words.append(word)
    return " ".join(words)


def _turn(speaker: str, text: str) -> list[int]:
    return encode(f"{speaker} : {text}")


def chat_turns(rng: SplitMix64, cast: Cast, mention_percent: int = 0, avoid: str = ""
               ) -> tuple[list[list[int]], str | None]:
    """One exchange of chat, a user turn and the bot's reply; with probability
    mention_percent / 100 the user mentions an item (never `avoid`), which is returned too."""
    mentioned = None
    if rng.chance(mention_percent):
        mentioned = avoid
        while mentioned == avoid:
            mentioned = (rng.choice(cast["item"]) if rng.chance(CAST_PERCENT)
                         else rng.choice(SLOTS["item"]))
        said = _fill(rng, rng.choice(MENTIONS), cast, item=mentioned)
    else:
        said = _fill(rng, rng.choice(CHAT), cast)
    if said.endswith(" .") and rng.chance(ECHO_PERCENT):  # "oh , anna went to the zoo ?"
        reply = f"oh , {said[:-2]} ?"
    else:
        reply = _fill(rng, rng.choice(REPLIES))
    return [_turn("user", said), _turn("bot", reply)], mentioned


def greeting_turns(rng: SplitMix64) -> list[list[int]]:
    """The opening exchange of every chat and grocery dialogue."""
    return [_turn("user", _fill(rng, rng.choice(GREETINGS))),
            _turn("bot", _fill(rng, rng.choice(GREETINGS)))]


@dataclass
class Grocery:
    """A grocery dialogue, turn by turn; the last two turns are the question and the start of
    the bot's answer, after which the item is due."""

    turns: list[list[int]]
    item: int  # token id of the item to buy
    options: list[int]  # the four items offered, in the order asked
    mentioned: list[int] = field(default_factory=list)  # distractor items the chat brought up

    @property
    def answer_turn(self) -> list[int]:
        """The bot's answer and the full stop after it."""
        return [self.item, TOKEN_ID["."]]


def grocery(rng: SplitMix64, n_exchanges: int, mention_percent: int, check_percent: int = 0
            ) -> Grocery:
    """A grocery dialogue with `n_exchanges` exchanges of chat between the request and the
    question; after each exchange, with probability check_percent / 100, the user asks the
    question and the bot answers it there too (training dialogues: more to learn from). The
    options are the item and three items the chat did not mention, in random
    order: a model of the size trained here learns to copy an item it has seen, not which
    frame it was seen in (that needs induction heads, which it did not grow in the steps the
    budget allows), so options it had seen in other frames would test that instead."""
    cast = cast_of(rng)
    item = rng.choice([i for i in SLOTS["item"] if i not in cast["item"]])
    turns = greeting_turns(rng)
    turns += [_turn("user", _fill(rng, rng.choice(REMEMBER), item=item)),
              _turn("bot", rng.choice(ACKNOWLEDGE))]
    mentioned: list[str] = []
    for _ in range(n_exchanges):
        exchange, said = chat_turns(rng, cast, mention_percent, avoid=item)
        turns += exchange
        if said is not None:
            mentioned.append(said)
        if rng.chance(check_percent):
            turns += [encode(QUESTION[0]), encode(f"{QUESTION[1]} {item} .")]
    others: list[str] = []
    while len(others) < 3:
        other = rng.choice(SLOTS["item"])
        if other != item and other not in others and other not in mentioned:
            others.append(other)
    options = [item, *others]
    rng.shuffle(options)
    turns += [encode(turn) for turn in QUESTION]
    return Grocery(turns, TOKEN_ID[item], [TOKEN_ID[o] for o in options],
                   [TOKEN_ID[m] for m in mentioned])


def opponent_moves(rng: SplitMix64, n_rounds: int, favourite_percent: int) -> list[str]:
    """A biased opponent's moves: one favourite (random) with probability favourite_percent
    / 100, the other two equally often otherwise."""
    favourite = rng.choice(SLOTS["move"])
    others = [m for m in SLOTS["move"] if m != favourite]
    return [favourite if rng.chance(favourite_percent) else rng.choice(others)
            for _ in range(n_rounds)]


def counter_of_favourite(history: list[str]) -> str:
    """The move a player with perfect memory plays: the one beating the opponent's most
    frequent move so far (the earliest of those tied; rock before anything is seen)."""
    if not history:
        return "rock"
    seen = [m for m in SLOTS["move"] if m in history]
    return BEATS[max(seen, key=lambda m: (history.count(m), -history.index(m)))]


def outcome(bot: str, user: str) -> int:
    """+1 when the bot wins, 0 for a draw, -1 when the user wins."""
    return 0 if bot == user else (1 if BEATS[user] == bot else -1)


def user_move_turn(move: str) -> list[int]:
    """The user's turn of a round."""
    return _turn("user", f"{move} .")


def bot_move_turn(bot: str, user: str) -> list[int]:
    """The bot's turn of a round: its move, then who won."""
    return _turn("bot", f"{bot} . {OUTCOMES[outcome(bot, user)]}")


def rps_opening() -> list[list[int]]:
    """The turns before the first round."""
    return [encode(turn) for turn in RPS_OPENING]


def rps(rng: SplitMix64, n_rounds: int, favourite_percent: int) -> list[list[int]]:
    """A whole game, turn by turn, with the bot playing `counter_of_favourite`."""
    moves = opponent_moves(rng, n_rounds, favourite_percent)
    turns = rps_opening()
    for i, move in enumerate(moves):
        turns += [user_move_turn(move), bot_move_turn(counter_of_favourite(moves[:i]), move)]
    return turns + [encode(turn) for turn in RPS_CLOSING]


def chat(rng: SplitMix64, n_exchanges: int, mention_percent: int) -> list[list[int]]:
    """A dialogue of chat alone."""
    cast = cast_of(rng)
    turns = greeting_turns(rng)
    for _ in range(n_exchanges):
        turns += chat_turns(rng, cast, mention_percent)[0]
    return turns


# --- the training corpus ---------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Mixture:
    """What the training dialogues are made of. Lengths are drawn uniformly from the ranges."""

    grocery_percent: int = 55  # the rest are chat
    rps_percent: int = 25
    exchanges: tuple[int, int] = (0, 8)  # chat exchanges in grocery and chat dialogues
    rounds: tuple[int, int] = (4, 22)  # rounds of rock-paper-scissors
    mention_percent: int = 25  # chance that a user's chat turn mentions an item
    check_percent: int = 30  # chance that the user asks for the item after a chat exchange
    favourite_percent: tuple[int, int] = (40, 80)  # how often the rps opponent plays its move


def dialogue(seed: int, index: int, mix: Mixture) -> list[int]:
    """Dialogue `index` of the corpus with this seed: its tokens, ending with <end>."""
    rng = SplitMix64(SplitMix64(((seed & 0xFFFFFFFF) << 32) | (index & 0xFFFFFFFF)).next_u64())
    kind = rng.weighted({"grocery": mix.grocery_percent, "rps": mix.rps_percent,
                         "chat": 100 - mix.grocery_percent - mix.rps_percent})
    if kind == "grocery":
        g = grocery(rng, rng.between(*mix.exchanges), mix.mention_percent, mix.check_percent)
        turns = [*g.turns, g.answer_turn]
    elif kind == "rps":
        turns = rps(rng, rng.between(*mix.rounds), rng.between(*mix.favourite_percent))
    else:
        turns = chat(rng, rng.between(*mix.exchanges), mix.mention_percent)
    return [token for turn in turns for token in turn] + [END]


def bot_turns(tokens: torch.Tensor) -> torch.Tensor:
    """Which tokens of a stream belong to the bot's turns, (N,) bool: from each "bot" speaker
    word up to the next "user" word or <end>."""
    marks = torch.full_like(tokens, -1)  # 1 opens a bot turn, 0 anything else; -1 carries on
    marks[tokens == TOKEN_ID["bot"]] = 1
    marks[(tokens == TOKEN_ID["user"]) | (tokens == END)] = 0
    marked = torch.where(marks >= 0, torch.arange(len(tokens)), -1)
    last = marked.cummax(dim=0).values  # the latest speaker mark at or before each token
    return (last >= 0) & (marks[last.clamp(min=0)] == 1)


@dataclass
class DialogueCorpus:
    """Dialogues laid end to end in one token stream, with where each begins."""

    tokens: torch.Tensor  # (N,) int64
    starts: torch.Tensor  # (n_dialogues,) the offset of each dialogue's first token
    bot: torch.Tensor  # (N,) bool, the tokens of the bot's turns (see bot_turns)

    @classmethod
    def build(cls, n_dialogues: int, seed: int, mix: Mixture) -> DialogueCorpus:
        """The first n_dialogues dialogues of the corpus with this seed."""
        dialogues = [dialogue(seed, i, mix) for i in range(n_dialogues)]
        lengths = torch.tensor([0] + [len(d) for d in dialogues[:-1]])
        tokens = torch.tensor([t for d in dialogues for t in d], dtype=torch.long)
        return cls(tokens, lengths.cumsum(0), bot_turns(tokens))

    @property
    def sha256(self) -> str:
        """The sha256 of the token stream as int64 bytes."""
        return hashlib.sha256(self.tokens.numpy().tobytes()).hexdigest()

    def _offsets(self, starts: torch.Tensor, seq_len: int) -> torch.Tensor:
        return (starts[:, None] + torch.arange(seq_len)) % len(self.tokens)  # (B, T)

    def rows(self, starts: torch.Tensor, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Training rows (x, y) of seq_len tokens: <bos>, then the stream from each start
        (wrapping around at its end); y is x shifted by one."""
        offsets = self._offsets(starts, seq_len)
        window = torch.cat([torch.full((len(starts), 1), BOS), self.tokens[offsets]], dim=1)
        return window[:, :-1].contiguous(), window[:, 1:].contiguous()  # (B, T) each

    def chat_rows(self, starts: torch.Tensor, seq_len: int, user_weight: float
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`rows` and the weight of each target, (x, y, w): 1 in the bot's turns, user_weight
        elsewhere, for fine-tuning a chat model mostly on its replies."""
        x, y = self.rows(starts, seq_len)
        bot = self.bot[self._offsets(starts, seq_len)]  # y[:, t] is the token at offsets[:, t]
        return x, y, torch.where(bot, 1.0, user_weight)

    def sparse_rows(self, starts: torch.Tensor, span: int, tail: int, keep: int,
                    user_weight: float, generator: torch.Generator
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Rows as a sparse cache would hold them, (x, y, w) like `chat_rows`: of the `span`
        stream tokens from each start, `keep` drawn uniformly from all but the last `tail`, in
        stream order, then those `tail` whole; <bos> in front, positions renumbered by the
        compaction (the row's own). Only targets inside the tail that follow a token of the tail
        weigh anything (1 in the bot's turns, user_weight elsewhere): a kept token after a gap
        cannot be predicted. Which tokens are dropped depends on no policy, only the draw."""
        B, prefix = len(starts), span - tail
        offsets = self._offsets(starts, span)  # (B, span)
        drawn = torch.rand(B, prefix, generator=generator).argsort(dim=1)[:, :keep]
        kept = torch.cat([offsets.gather(1, drawn.sort(dim=1).values), offsets[:, prefix:]],
                         dim=1)  # (B, keep + tail)
        window = torch.cat([torch.full((B, 1), BOS), self.tokens[kept]], dim=1)
        # y[:, j] is the token at kept[:, j]
        weights = torch.where(self.bot[kept], 1.0, user_weight)
        weights[:, : keep + 1] = 0.0  # the kept tokens, and the tail's first, follow a gap
        return window[:, :-1].contiguous(), window[:, 1:].contiguous(), weights

    def sample_starts(self, batch_size: int, generator: torch.Generator) -> torch.Tensor:
        """Where rows begin: half at a dialogue's first token, half anywhere, so the model
        learns whole dialogues and also contexts that begin in the middle of one (as a
        streaming cache's do)."""
        anywhere = torch.randint(len(self.tokens), (batch_size,), generator=generator)
        dialogue_starts = self.starts[torch.randint(len(self.starts), (batch_size,),
                                                    generator=generator)]
        at_start = torch.rand(batch_size, generator=generator) < 0.5
        return torch.where(at_start, dialogue_starts, anywhere)


def training_corpora(n_dialogues: int, mix: Mixture) -> tuple[DialogueCorpus, DialogueCorpus]:
    """The training dialogues (seed 0) and the validation ones (seed 1, a twentieth as many
    and at least 64); evaluation streams use other seeds again."""
    return (DialogueCorpus.build(n_dialogues, seed=0, mix=mix),
            DialogueCorpus.build(max(64, n_dialogues // 20), seed=1, mix=mix))
