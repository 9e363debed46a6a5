"""Each chat provider's body for one opening, its resolution and a storm of 50, within the provider's limits."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from hark_fleet.hub.notify.formats import discord, google_chat, slack, teams
from hark_fleet.hub.notify.message import Item, Message

T0 = datetime(2026, 12, 6, 20, 0, tzinfo=UTC)
URL = "https://hub.example/console/nodes/nod_1"


def single(*, opened: bool = True, title: str = "Stage left: input silent on channel 2") -> Message:
    item = Item(title=title, node_id="nod_1", node_name="Stage left", channel="2", url=URL)
    return Message(
        kind="health.opened" if opened else "health.resolved",
        title=title,
        severity="critical",
        opened=opened,
        site="Main hall",
        since=T0,
        thread_key="health:evt_1",
        items=(item,),
        url=URL,
    )


def storm(n: int = 50) -> Message:
    items = tuple(
        Item(title=f"Box {i} went offline " + "x" * 80, node_id=f"nod_{i}", node_name=f"Box {i}", url=f"{URL}{i}")
        for i in range(n)
    )
    return Message(
        kind="node.offline",
        title=f"{n} boxes of Main hall went offline",
        severity="critical",
        opened=True,
        site="Main hall",
        since=T0,
        thread_key="storm:node.offline:sit_a",
        items=items,
        url="https://hub.example/console/nodes?site=sit_a",
    )


def dump(body: dict[str, Any]) -> str:
    return json.dumps(body, ensure_ascii=False)


# Slack


def check_slack_limits(body: dict[str, Any]) -> None:
    blocks = body["blocks"]
    assert isinstance(body["text"], str) and body["text"]
    assert len(blocks) <= 50
    for block in blocks:
        if block["type"] == "header":
            assert block["text"]["type"] == "plain_text" and len(block["text"]["text"]) <= 150
        if block["type"] == "section":
            assert block["text"]["type"] == "mrkdwn" and len(block["text"]["text"]) <= 3000


def test_slack_opening_says_what_where_since_and_links_to_the_console() -> None:
    body = slack.body(single())
    check_slack_limits(body)
    text = dump(body)
    assert body["blocks"][0]["type"] == "header"
    assert "Stage left" in text and "channel 2" in text and "Main hall" in text and "2026-12-06 20:00 UTC" in text
    (actions,) = [b for b in body["blocks"] if b["type"] == "actions"]
    assert actions["elements"][0]["type"] == "button" and actions["elements"][0]["url"] == URL
    assert "thread_ts" not in body


def test_slack_resolution_is_marked_resolved_and_threads_with_the_opening() -> None:
    body = slack.body(single(opened=False), thread_ts="1712345678.000100")
    check_slack_limits(body)
    assert body["blocks"][0]["text"]["text"].startswith("✅ Resolved:")
    assert "Resolved" in body["text"] and body["thread_ts"] == "1712345678.000100"
    assert slack.body(single(), thread_ts="1712345678.000100").get("thread_ts") is None


def test_slack_storm_of_fifty_is_a_count_and_ten_lines_within_limits() -> None:
    body = slack.body(storm())
    check_slack_limits(body)
    (section,) = [b for b in body["blocks"] if b["type"] == "section"]
    assert "*50 affected:*" in section["text"]["text"]
    assert section["text"]["text"].count("• ") == 10 and "and 40 more" in section["text"]["text"]


def test_slack_escapes_mrkdwn_control_characters_and_clips_a_long_header() -> None:
    body = slack.body(single(title="<!channel> A & B > C " + "y" * 300))
    check_slack_limits(body)
    mrkdwn = dump([body["text"], [b for b in body["blocks"] if b["type"] != "header"]])
    assert "<!channel>" not in mrkdwn and "&lt;!channel&gt; A &amp; B &gt; C" in mrkdwn
    header = body["blocks"][0]["text"]["text"]  # plain_text: shown as written, not parsed
    assert header.startswith("<!channel> A & B > C") and len(header) == 150


# Discord


def check_discord_limits(body: dict[str, Any]) -> dict[str, Any]:
    (embed,) = body["embeds"]
    assert len(embed["title"]) <= 256 and len(embed["description"]) <= 4096 and len(embed["fields"]) <= 25
    for f in embed["fields"]:
        assert 0 < len(f["name"]) <= 256 and 0 < len(f["value"]) <= 1024
    total = len(embed["title"]) + len(embed["description"]) + len(embed["footer"]["text"])
    total += sum(len(f["name"]) + len(f["value"]) for f in embed["fields"])
    assert total <= 6000
    datetime.fromisoformat(embed["timestamp"])
    return embed


def test_discord_opening_is_an_embed_coloured_by_severity_with_the_link() -> None:
    embed = check_discord_limits(discord.body(single()))
    assert embed["url"] == URL and embed["color"] == discord.COLORS["critical"]
    text = dump(embed)
    assert "Stage left" in text and "channel 2" in text and "Main hall" in text and "2026-12-06 20:00 UTC" in text
    assert datetime.fromisoformat(embed["timestamp"]) == T0


def test_discord_resolution_is_green_and_marked_resolved() -> None:
    embed = check_discord_limits(discord.body(single(opened=False)))
    assert embed["color"] == discord.RESOLVED_COLOR and "Resolved:" in embed["title"]
    assert {"name": "Status", "value": "resolved", "inline": True} in embed["fields"]


def test_discord_storm_of_fifty_is_a_count_and_ten_lines_within_limits() -> None:
    embed = check_discord_limits(discord.body(storm()))
    assert "50 affected" in embed["description"] and embed["description"].count("• ") == 10
    assert "and 40 more" in embed["description"]


def test_discord_escapes_markdown_clips_the_title_and_mentions_nobody() -> None:
    body = discord.body(single(title="**bold** @everyone " + "y" * 300))
    embed = check_discord_limits(body)
    assert "\\*\\*bold\\*\\*" in embed["description"] and len(embed["title"]) == 256
    assert body["allowed_mentions"] == {"parse": []}


# Teams


def card(body: dict[str, Any]) -> dict[str, Any]:
    assert body["type"] == "message"
    (attachment,) = body["attachments"]
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    content = attachment["content"]
    assert content["type"] == "AdaptiveCard" and content["version"] == "1.4"
    assert content["$schema"] == "http://adaptivecards.io/schemas/adaptive-card.json"
    assert all(b["type"] in {"TextBlock", "FactSet"} for b in content["body"])
    return content


def test_teams_opening_is_an_adaptive_card_with_facts_and_an_open_url_action() -> None:
    content = card(teams.body(single()))
    assert content["actions"] == [{"type": "Action.OpenUrl", "title": "Open in console", "url": URL}]
    (facts,) = [b for b in content["body"] if b["type"] == "FactSet"]
    values = {f["title"]: f["value"] for f in facts["facts"]}
    assert values["Site"] == "Main hall" and values["Where"] == "Stage left, channel 2"
    assert values["Since"] == "2026-12-06 20:00 UTC" and values["Status"] == "opened"


def test_teams_resolution_is_marked_resolved_in_green() -> None:
    content = card(teams.body(single(opened=False)))
    assert content["body"][0]["text"].startswith("✅ Resolved:") and content["body"][0]["color"] == "Good"


def test_teams_storm_of_fifty_is_a_count_and_ten_lines() -> None:
    content = card(teams.body(storm()))
    texts = [b["text"] for b in content["body"] if b["type"] == "TextBlock"]
    assert "50 affected:" in texts and sum(t.startswith("- Box") for t in texts) == 10 and "…and 40 more" in texts
    assert len(dump(teams.body(storm()))) < 28_000  # Teams' message size limit


def test_teams_keeps_text_as_written_in_valid_json() -> None:
    body = teams.body(single(title='A & B <c> "d"'))
    assert json.loads(dump(body)) == body and card(body)["body"][0]["text"] == 'A & B <c> "d"'


# Google Chat


def widgets(body: dict[str, Any]) -> list[dict[str, Any]]:
    (entry,) = body["cardsV2"]
    assert entry["cardId"] and isinstance(entry["card"]["header"]["title"], str)
    (section,) = entry["card"]["sections"]
    result: list[dict[str, Any]] = section["widgets"]
    return result


def test_google_chat_opening_is_a_card_with_the_link_and_a_thread_key() -> None:
    body = google_chat.body(single())
    assert body["thread"] == {"threadKey": "health:evt_1"} and URL in body["text"]
    (buttons,) = [w["buttonList"] for w in widgets(body) if "buttonList" in w]
    assert buttons["buttons"][0]["onClick"]["openLink"]["url"] == URL
    text = dump(body)
    assert "Stage left, channel 2" in text and "Main hall" in text and "2026-12-06 20:00 UTC" in text


def test_google_chat_resolution_is_marked_resolved_in_the_openings_thread() -> None:
    opening, resolution = google_chat.body(single()), google_chat.body(single(opened=False))
    assert resolution["thread"] == opening["thread"]
    assert resolution["cardsV2"][0]["card"]["header"]["title"].startswith("✅ Resolved:")
    assert resolution["cardsV2"][0]["cardId"] != opening["cardsV2"][0]["cardId"]


def test_google_chat_storm_of_fifty_is_a_count_and_ten_lines() -> None:
    body = google_chat.body(storm())
    (paragraph,) = [w["textParagraph"]["text"] for w in widgets(body) if "textParagraph" in w]
    assert "50 affected" in paragraph and paragraph.count("• ") == 10 and "and 40 more" in paragraph
    assert len(dump(body).encode()) < 32_000


def test_google_chat_escapes_html_in_card_text() -> None:
    body = google_chat.body(single(title="<b>A</b> & B"))
    assert "&lt;b&gt;A&lt;/b&gt; &amp; B" in body["cardsV2"][0]["card"]["header"]["title"]
    assert "<b>A</b>" not in dump(body["cardsV2"])
