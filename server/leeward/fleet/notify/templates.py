"""Each notification kind's words: a title, a Markdown body (the editor and chat show it; clients
render it inert) and a plain-text email body, rendered with jinja2 from the producer's data plus
the environment's name, region and expiry. Each says what to do about it.

Nothing here produces HTML, so autoescaping is off for these templates (it would put `&amp;` in
a plain-text email); the environment's name is a checked name, and free text a producer passes
(a failure's reason) is quoted in a code span in Markdown so that it stays inert."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from jinja2 import ChainableUndefined, Environment, select_autoescape

from leeward_protocol.notify import NotificationKind


@dataclass(frozen=True)
class Rendered:
    title: str
    body: str
    text: str


def _code(value: object) -> str:
    """A Markdown code span that holds any text inertly (backticks can't end it early)."""
    text = " ".join(str(value).split())
    fence = "`"
    while fence in text:
        fence += "`"
    return f"{fence} {text} {fence}"


class _Unknown(ChainableUndefined):
    """A value the producer did not give shows as `?` instead of failing its transaction."""

    def __str__(self) -> str:
        return "?"

    def __call__(self, *args: Any, **kwargs: Any) -> _Unknown:  # type: ignore[override]
        return self


def _utc(value: object) -> str:
    """A time as people read it; stored values come back as ISO strings."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return str(value)
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return str(value)


_jinja = Environment(
    autoescape=select_autoescape(enabled_extensions=("html", "htm"), default=False),
    undefined=_Unknown,
    keep_trailing_newline=False,
)
_jinja.filters["code"] = _code
_jinja.filters["utc"] = _utc

_WHEN = "{{ when | utc }}"
_DELETES = "{{ (deletes_at or when) | utc }}"

_TEMPLATES: dict[NotificationKind, tuple[str, str, str]] = {
    NotificationKind.EXPIRY: (
        "{{ environment }} expires in {{ lead }}",
        "Your environment **{{ environment }}** ({{ region }}) expires at "
        "{{ expires_at | utc }}, in {{ lead }}; it is deleted then.\n\n"
        "To keep it longer: `leeward extend {{ environment }} --hours {{ hours }}`",
        "Your environment {{ environment }} ({{ region }}) expires at "
        "{{ expires_at | utc }}, in {{ lead }}; it is deleted then.\n\n"
        "To keep it longer, run:\n\n    leeward extend {{ environment }} --hours {{ hours }}\n",
    ),
    NotificationKind.BACKUP_FAILED: (
        "A backup of {{ environment }} failed",
        "The backup of **{{ environment }}** ({{ region }}) failed: {{ reason | code }}\n\n"
        "Try one now with `leeward backup now {{ environment }}`; if it fails again, tell the "
        "operators.",
        "The backup of {{ environment }} ({{ region }}) failed: {{ reason }}\n\n"
        "Try one now with:\n\n    leeward backup now {{ environment }}\n\n"
        "If it fails again, tell the operators.\n",
    ),
    NotificationKind.DECOMMISSION: (
        "{% if container %}{{ environment }} expires at " + _WHEN + ": its host {{ host }} is "
        "retired{% else %}{{ environment }} must move off host {{ host }} by "
        + _WHEN
        + "{% endif %}",
        "Host **{{ host }}**, where **{{ environment }}** runs, is being retired by "
        + _WHEN
        + "{% if reason %} ({{ reason }}){% endif %}.\n\n"
        "{% if container %}The container expires then: save what you need and make a new one "
        "with `leeward create container`."
        "{% else %}It is moved to another host before then, with its files (its processes "
        "stop). Move it yourself now, when it suits you: `leeward move {{ environment }}`"
        "{% endif %}",
        "Host {{ host }}, where {{ environment }} runs, is being retired by "
        + _WHEN
        + "{% if reason %} ({{ reason }}){% endif %}.\n\n"
        "{% if container %}The container expires then: save what you need and make a new one "
        "with:\n\n    leeward create container\n"
        "{% else %}It is moved to another host before then, with its files (its processes "
        "stop). Move it yourself now, when it suits you:\n\n    leeward move {{ environment }}\n"
        "{% endif %}",
    ),
    NotificationKind.STORM: (
        "{{ environment }} is affected by trouble in {{ region }}",
        "**{{ environment }}** is affected: {{ reason | code }}\n\n"
        "Check it with `leeward show {{ environment }}`.",
        "{{ environment }} is affected: {{ reason }}\n\nCheck it with:\n\n"
        "    leeward show {{ environment }}\n",
    ),
    NotificationKind.SHARE: (
        "{{ by }} shared {{ environment }} with you",
        "**{{ by }}** shared **{{ environment }}** with you.\n\n"
        "Connect with `leeward ssh {{ environment }}`.",
        "{{ by }} shared {{ environment }} with you.\n\nConnect with:\n\n"
        "    leeward ssh {{ environment }}\n",
    ),
    NotificationKind.SETUP_FAILED: (
        "Setup of {{ environment }} failed at {{ step }}",
        "A setup step of **{{ environment }}** failed: {{ step | code }}: {{ reason | code }}\n\n"
        "See the whole report with `leeward show {{ environment }}`, fix the step and run it "
        "again.",
        "A setup step of {{ environment }} failed: {{ step }}: {{ reason }}\n\n"
        "See the whole report with:\n\n    leeward show {{ environment }}\n\n"
        "then fix the step and run it again.\n",
    ),
    NotificationKind.IDLE_STOP: (
        "{{ environment }} was stopped for being idle",
        "**{{ environment }}** ({{ region }}) was stopped after being idle"
        "{% if idle_for %} for {{ idle_for }}{% endif %}; its home is kept."
        "{% if deletes_at %} If it stays stopped, it is deleted at {{ deletes_at | utc }}."
        "{% endif %}\n\n"
        "Start it again with `leeward start {{ environment }}` or just connect to it.",
        "{{ environment }} ({{ region }}) was stopped after being idle"
        "{% if idle_for %} for {{ idle_for }}{% endif %}; its home is kept."
        "{% if deletes_at %} If it stays stopped, it is deleted at {{ deletes_at | utc }}."
        "{% endif %}\n\n"
        "Start it again with:\n\n    leeward start {{ environment }}\n\nor just connect to it.\n",
    ),
    NotificationKind.DORMANT_DELETE: (
        "{{ environment }} will be deleted at " + _DELETES,
        "**{{ environment }}** ({{ region }}) has been stopped for long and will be deleted at "
        + _DELETES
        + ".\n\nKeep it by starting it: `leeward start {{ environment }}`",
        "{{ environment }} ({{ region }}) has been stopped for long and will be deleted at "
        + _DELETES
        + ".\n\nKeep it by starting it:\n\n    leeward start {{ environment }}\n",
    ),
}

_COMPILED = {
    kind: tuple(_jinja.from_string(source) for source in sources)
    for kind, sources in _TEMPLATES.items()
}


def render(kind: NotificationKind, values: dict[str, Any]) -> Rendered:
    """The kind's title and bodies."""
    title, body, text = (template.render(values) for template in _COMPILED[kind])
    return Rendered(title=" ".join(title.split())[:200], body=body, text=text)
