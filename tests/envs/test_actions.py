import pytest

from distillery.envs.actions import MAX_ACTION_CHARS, format_call, parse_action
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
