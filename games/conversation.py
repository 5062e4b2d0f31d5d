"""The conversation game (DESIGN §2.2).

State s_h = (x₁, a₁, …, x_h): the conversation so far, as chat messages ending with a user turn.
Action a_h = the whole assistant turn. The next user turn x_{h+1} comes from a *user model*:
scripted from a dataset (the user turns are fixed in advance, MT-bench-101 style) or a simulator
that reads the conversation so far. The game ends when the user model has nothing more to say.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

Message = dict  # {"role": "user" | "assistant" | "system", "content": str}
Conversation = list  # list[Message]


class UserModel(Protocol):
    """Produces the next user turn from the conversation so far (None: the conversation ends)."""

    def next_turn(self, messages: Conversation) -> str | None: ...


@dataclass(frozen=True)
class ScriptedUser:
    """User turns fixed in advance: turn h is ``turns[h]`` whatever the assistant said."""

    turns: tuple[str, ...]

    def next_turn(self, messages: Conversation) -> str | None:
        h = sum(m["role"] == "assistant" for m in messages)
        return self.turns[h] if h < len(self.turns) else None


@dataclass(frozen=True)
class Episode:
    """One conversation to play: an id (stable across the run) and its user model."""

    conversation_id: str
    user: UserModel
    system: str | None = None

    def start(self) -> Conversation:
        messages = [{"role": "system", "content": self.system}] if self.system else []
        first = self.user.next_turn(messages)
        if first is None:
            raise ValueError(f"episode {self.conversation_id}: the user model has no first turn")
        return messages + [{"role": "user", "content": first}]

    def advance(self, messages: Conversation, response: str) -> Conversation | None:
        """The state after the assistant answers ``response``; None when the conversation ends."""
        messages = messages + [{"role": "assistant", "content": response}]
        nxt = self.user.next_turn(messages)
        return None if nxt is None else messages + [{"role": "user", "content": nxt}]
