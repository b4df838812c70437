import hypothesis.strategies as st
import pytest
from hypothesis import example, given, settings

from distillery.envs.actions import (
    MAX_ACTION_CHARS,
    _bind,
    _parse_tree,
    format_call,
    parse_action,
    simple_call,
)
from distillery.envs.base import ToolParam, ToolSpec
from distillery.types import ToolCall

SPECS = [
    ToolSpec("send_mail", "send", (ToolParam("to"), ToolParam("subject"), ToolParam("body"),
                                   ToolParam("cc", required=False)), mutates=True),
    ToolSpec("create_event", "book", (ToolParam("title"), ToolParam("duration", type="integer"))),
    ToolSpec("finish", "end"),
]


def test_keyword_call_round_trips_through_format():
    call = ToolCall("send_mail", {"to": "ann@x.com", "subject": "Q3 \"budget\"", "body": "Hi,\n\nCheers, Sam"})
    parsed = parse_action(format_call(call), SPECS)
    assert parsed.valid and parsed.call == call


def test_positional_arguments_bind_in_schema_order():
    p = parse_action('send_mail("a@b.c", "s", "b")', SPECS)
    assert p.valid and p.call.args == {"to": "a@b.c", "subject": "s", "body": "b"}


def test_integer_parameter_accepts_digit_string_and_rejects_words():
    assert parse_action('create_event(title="x", duration="45")', SPECS).call.args["duration"] == 45
    bad = parse_action('create_event(title="x", duration="long")', SPECS)
    assert not bad.valid and "integer" in bad.error


@pytest.mark.parametrize("text, fragment", [
    ("", "empty"),
    ("delete_everything()", "unknown tool"),
    ('send_mail(to="a")', "missing argument 'subject'"),
    ('send_mail(to="a", subject="s", body="b", bcc="x")', "unknown argument"),
    ('send_mail(to=open("/etc/passwd"), subject="s", body="b")', "literal"),
    ('__import__("os").system("rm -rf /")', "single tool call"),
    ("send_mail(to='a', subject='s'", "malformed"),
    ('{"tool": "finish", "args": [1]}', "object"),
    ("x" * (MAX_ACTION_CHARS + 1), "too long"),
])
def test_bad_actions_are_invalid_with_a_reason(text, fragment):
    p = parse_action(text, SPECS)
    assert not p.valid and p.call is None
    assert fragment in p.error


def test_first_line_is_the_action_and_json_form_is_accepted():
    assert parse_action("finish()\nI am done.", SPECS).call == ToolCall("finish", {})
    p = parse_action('{"name": "send_mail", "arguments": "{\\"to\\": \\"a\\", \\"subject\\": \\"s\\", \\"body\\": \\"b\\"}"}', SPECS)
    assert p.valid and p.call.args["to"] == "a"


# ---------------------------------------------------------------------------------------
# The simple form, read without a parser, means what Python's parser makes of it
# ---------------------------------------------------------------------------------------

_TOOLS = ["send_mail", "create_event", "finish", "f", "match", "if", "None", "é", "Send_Mail"]
_KEYS = ["to", "subject", "body", "title", "duration", "_", "x1", "if", "True", "__debug__", "é"]
_SPACE = st.sampled_from(["", "", " ", "\t", "\x0c"])
_IN_STRING = st.one_of(st.sampled_from("ab #,()=é"), st.characters(exclude_categories=["Cs"]),
                       st.sampled_from(['"', "'", "\\", "\x00", "\n", "\r", "\\n"]))
_STRING = st.builds(lambda q, body: q + "".join(body) + q, st.sampled_from(['"', "'"]), st.lists(_IN_STRING, max_size=6))
_INTEGER = st.one_of(st.from_regex(r"-?[1-9][0-9]{0,3}|0", fullmatch=True),
                     st.from_regex(r"-? ?[0-9_]{1,5}", fullmatch=True))
_VALUE = st.one_of(_STRING, _INTEGER, st.sampled_from(["True", "x", '"a" "b"', "-", "", "0x1F", "1.5", "-'a'", "00"]))
_ARG = st.one_of(_VALUE, st.builds(lambda k, a, b, v: f"{k}{a}={b}{v}", st.sampled_from(_KEYS), _SPACE, _SPACE, _VALUE))
_CALL = st.builds(lambda name, space, args, sep, tail: f"{name}{space}({sep.join(args)}{tail})",
                  st.sampled_from(_TOOLS), _SPACE, st.lists(_ARG, max_size=4),
                  st.sampled_from([",", ", ", " ,", ",\t", ",,"]), st.sampled_from(["", ",", ", ", " ", ",,"]))


@settings(max_examples=1000, derandomize=True, database=None, deadline=None)
@given(src=_CALL)
@example(src='send_mail(to="a", to="b")')
@example(src='send_mail(to="a", "b")')
def test_a_call_read_without_the_parser_is_what_the_parser_reads(src):
    simple = simple_call(src)
    if simple is not None:
        by_name = {s.name: s for s in SPECS}
        assert _bind(*simple, by_name) == _parse_tree(src, by_name), src


def test_the_simple_form_covers_every_formatted_call_without_escapes():
    calls = [ToolCall("send_mail", {"to": "ann@x.com", "subject": "Q3 'budget' — ok", "body": "Hi, Sam #1"}),
             ToolCall("create_event", {"title": "x", "duration": -15}), ToolCall("finish", {})]
    for call in calls:
        src = format_call(call)
        assert simple_call(src) is not None, src
        assert parse_action(src, SPECS).call == call
    # A backslash escape (here a newline) is left to the parser, which reads it.
    escaped = format_call(ToolCall("send_mail", {"to": "a@b.c", "subject": "s", "body": "two\nlines"}))
    assert simple_call(escaped) is None
    assert parse_action(escaped, SPECS).call.args["body"] == "two\nlines"
