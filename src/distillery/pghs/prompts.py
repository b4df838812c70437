"""Every prompt of the PGHS `llm` reasoner, as data. Nothing else in the code holds prompt text.

One request asks about one merchant under one strategy, for every user group at once; the
reply must be a JSON object {"groups": {"<group>": {"<target>": <rate>, ...}, ...}}.
"""

from __future__ import annotations

SYSTEM = (
    "You simulate how groups of food-delivery users respond to a merchant's strategy. "
    "For each user group, estimate the outcome rates the merchant would see in an ordinary "
    "week. Rates are fractions between 0 and 1. Reply with one JSON object and nothing else."
)

USER = """\
Marketplace averages (all merchants, all groups): {prior}

Merchant {merchant_id}: category {merchant_category}, rating {merchant_rating:.1f}, \
typical basket {merchant_price_level:.2f}.
Strategy: discount {discount_pct:.0f}% off, delivery fee {delivery_fee:.2f}, coupon \
{coupon_type}, ad spend {ad_spend:.0f} per week, {menu_breadth} menu items.

User groups:
{groups}
{policies}
Estimate for every group: {targets}.
Reply as JSON: {{"groups": {{"<group name>": {{{target_keys}}}, ...}}}}"""

GROUP_LINE = "- {name}: {description}"

POLICIES = """
Decision policies mined from these groups' past behaviour at other merchants. They are \
measured, not assumed: where they disagree with intuition (for example about how much a \
group reacts to price), trust them. Compose the ones whose conditions hold for this merchant \
and strategy, starting from each group's habitual level:
{policies}
"""

TARGET_TEXT = {
    "order_rate": "order_rate (orders per exposure)",
    "ctr": "ctr (clicks per exposure)",
    "cvr": "cvr (orders per click)",
}

RETRY = ("Your reply could not be used: {error}. Reply again with only the JSON object, "
         "with a number for every group and rate.")
