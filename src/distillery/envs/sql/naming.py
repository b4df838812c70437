"""Naming styles: how one database spells its tables and columns.

A logical name is a tuple of English words (("customer", "id")). A `Namer` turns it into a
physical identifier in one of the styles below, with choices drawn once per database (which
words are abbreviated and how, plural or singular tables, a schema prefix), so the same
logical table is spelled differently from one database to the next and names must be
discovered with the tools, not memorised.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

# Styles, and how often each abbreviates a word it knows an abbreviation for.
STYLES: dict[str, float] = {
    "snake": 0.15,         # customer_orders.customer_id
    "snake_abbr": 0.85,    # cust_ord.cust_id
    "camel": 0.2,          # CustomerOrders.customerId
    "upper": 0.6,          # CUST_ORDERS.CUST_ID
    "pascal_abbr": 0.8,    # CustOrd.CustID
    "prefixed": 0.4,       # t_customer_order.cus_customer_id
    "legacy": 1.0,         # CUSTORD.CUSTID (no separators, every word cut to at most 4 letters)
}

ABBREVIATIONS: dict[str, tuple[str, ...]] = {
    "account": ("acct", "acc"), "address": ("addr",), "amount": ("amt",), "assignment": ("asgn", "assgn"),
    "balance": ("bal",), "branch": ("brnch", "br"), "budget": ("bdgt",), "building": ("bldg",),
    "capacity": ("cap",), "carrier": ("carr", "crr"), "category": ("cat", "ctg"), "channel": ("chnl",),
    "city": ("cty",), "class": ("cls",), "client": ("clnt", "cli"), "code": ("cd",), "cost": ("cst",),
    "country": ("ctry", "cntry"), "course": ("crs",), "credits": ("cr", "crd"), "customer": ("cust", "cst"),
    "date": ("dt",), "declared": ("decl",), "department": ("dept", "dpt"), "description": ("desc", "descr"),
    "destination": ("dest",), "distance": ("dist",), "doctor": ("doc", "dr"), "dosage": ("dose",),
    "driver": ("drv", "drvr"), "duration": ("dur",), "employee": ("emp", "empl"), "enrollment": ("enrl", "enr"),
    "entry": ("ent",), "final": ("fin",), "floor": ("flr",), "freight": ("frt",), "history": ("hist",),
    "hours": ("hrs",), "identifier": ("id",), "instructor": ("instr", "inst"), "interest": ("int", "intr"),
    "license": ("lic",), "line": ("ln",), "loan": ("ln", "lo"), "location": ("loc",), "loyalty": ("loy",),
    "management": ("mgmt",), "manager": ("mgr",), "medication": ("med", "medn"), "minimum": ("min",),
    "name": ("nm",), "number": ("nbr", "no", "num"), "opened": ("opn",), "order": ("ord",),
    "origin": ("orig",), "package": ("pkg",), "patient": ("pat", "pt"), "payment": ("pmt", "pymt"),
    "points": ("pts",), "prescription": ("rx", "presc"), "price": ("prc",), "principal": ("prin", "prncpl"),
    "product": ("prod", "prd"), "project": ("proj", "prj"), "quantity": ("qty",), "rate": ("rt",),
    "reference": ("ref",), "region": ("rgn", "reg"), "salary": ("sal",), "score": ("scr",),
    "section": ("sect", "sec"), "segment": ("seg", "sgmt"), "shipment": ("shpmt", "shp"), "specialty": ("spec", "spcl"),
    "status": ("stat", "sts"), "store": ("str", "stor"), "student": ("stu", "stdnt"), "supplier": ("supp", "sup"),
    "title": ("ttl",), "total": ("tot",), "tracking": ("trk",), "transaction": ("txn", "trx"),
    "type": ("typ", "tp"), "unit": ("un",), "value": ("val",), "visit": ("vst", "vis"),
    "warehouse": ("whse", "wh"), "weight": ("wt", "wgt"), "year": ("yr",), "level": ("lvl",),
    "ward": ("wrd",), "area": ("ar",), "rating": ("rtg",), "route": ("rte",), "term": ("trm",),
    "grade": ("grd",), "letter": ("ltr",), "brand": ("brnd",), "full": ("fl",), "home": ("hm",),
    "major": ("maj",), "academic": ("acad",), "blood": ("bld",), "birth": ("brth", "dob"), "drug": ("drg",),
    "hire": ("hr",), "join": ("jn",), "signup": ("sgnup",), "start": ("strt",), "ship": ("shp",),
    "employment": ("empl",), "audit": ("aud",), "archive": ("arch",), "summary": ("summ",),
    "snapshot": ("snap",), "mapping": ("map",), "configuration": ("cfg", "conf"), "temporary": ("tmp",),
}

# Schema prefixes a database may put before every table name (empty: none).
TABLE_PREFIXES: tuple[tuple[str, ...], ...] = ((), (), (), ("dw",), ("ops",), ("app",), ("core",))

# SQL words a generated identifier must not be (SQLite keywords and common function names):
# such a name gets a style-appropriate suffix instead of needing quotes.
RESERVED = frozenset("""
abort action add after all alter always analyze and as asc attach autoincrement before begin between
by cascade case cast check collate column commit conflict constraint create cross current current_date
current_time current_timestamp database default deferrable deferred delete desc detach distinct do drop
each else end escape except exclude exclusive exists explain fail filter first following for foreign
from full generated glob group groups having if ignore immediate in index indexed initially inner insert
instead intersect into is isnull join key last left like limit match materialized natural no not nothing
notnull null nulls of offset on or order others outer over partition plan pragma preceding primary query
raise range recursive references regexp reindex release rename replace restrict returning right rollback
row rows savepoint select set table temp temporary then ties to transaction trigger unbounded union
unique update using vacuum values view virtual when where window with without
count sum avg min max round date time year month day abs length lower upper
""".split())

_SPLIT = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|\d+")


def split_words(name: str) -> list[str]:
    """Lower-case word pieces of a physical identifier: CustOrdID -> cust, ord, id."""
    out: list[str] = []
    for part in re.split(r"[_\W]+", name):
        out.extend(w.lower() for w in _SPLIT.findall(part))
    return out


def plural(word: str) -> str:
    if word.endswith("y") and word[-2:-1] not in "aeiou":
        return word[:-1] + "ies"
    if word.endswith(("s", "x", "ch", "sh")):
        return word + "es"
    return word + "s"


def _cut(word: str) -> str:
    """A legacy-style cut of a word it has no abbreviation for: at most four letters."""
    if len(word) <= 4:
        return word
    consonants = word[0] + re.sub(r"[aeiou]", "", word[1:])
    return consonants[:4] if len(consonants) >= 3 else word[:4]


@dataclass
class Namer:
    """One database's spelling of logical names (see the module docstring)."""

    style: str
    rng: random.Random
    plural_tables: bool = False
    prefix: tuple[str, ...] = ()
    abbrev: dict[str, str] = field(default_factory=dict)
    table_codes: dict[str, str] = field(default_factory=dict)

    @classmethod
    def draw(cls, style: str, rng: random.Random) -> Namer:
        if style not in STYLES:
            raise ValueError(f"unknown naming style {style!r}; styles: {', '.join(STYLES)}")
        plural_tables = style in ("snake", "camel") and rng.random() < 0.7
        prefix = rng.choice(TABLE_PREFIXES) if style not in ("prefixed", "legacy") else ()
        return cls(style, rng, plural_tables, prefix)

    # ---- words ----------------------------------------------------------------------

    def _word(self, word: str) -> str:
        """This database's spelling of one word (drawn once, then kept)."""
        if word not in self.abbrev:
            options = ABBREVIATIONS.get(word)
            if options and self.rng.random() < STYLES[self.style]:
                self.abbrev[word] = self.rng.choice(options)
            elif self.style == "legacy":
                self.abbrev[word] = _cut(word)
            else:
                self.abbrev[word] = word
        return self.abbrev[word]

    def _join(self, words: Sequence[str], kind: str) -> str:
        s = self.style
        if s in ("snake", "snake_abbr", "prefixed"):
            return "_".join(w.lower() for w in words)
        if s == "upper":
            return "_".join(w.upper() for w in words)
        if s == "legacy":
            return "".join(w.upper() for w in words)
        if s == "camel" and kind == "column":
            return words[0].lower() + "".join(w.capitalize() for w in words[1:])
        # camel tables, pascal_abbr: PascalCase, with ID kept upper case
        return "".join("ID" if w == "id" and s == "pascal_abbr" else w.capitalize() for w in words)

    def _safe(self, name: str, kind: str) -> str:
        if name.lower() not in RESERVED:
            return name
        extra = {"table": "tbl", "column": "val"}[kind]
        return self._join([*split_words(name), extra], kind)

    # ---- identifiers ----------------------------------------------------------------

    def table(self, words: Sequence[str], plural_ok: bool = True) -> str:
        ws = [self._word(w) for w in words]
        if self.plural_tables and plural_ok:
            ws[-1] = plural(ws[-1]) if ws[-1] == words[-1] else ws[-1]
        if self.style == "prefixed":
            ws = ["t", *ws]
        return self._safe(self._join([*self.prefix, *ws], "table"), "table")

    def table_code(self, table_key: str, words: Sequence[str]) -> str:
        """The column prefix of the `prefixed` style: three (or more) letters per table."""
        if table_key not in self.table_codes:
            stem = "".join(words)
            taken = set(self.table_codes.values())
            for n in range(3, len(stem) + 1):
                if stem[:n] not in taken:
                    self.table_codes[table_key] = stem[:n]
                    break
            else:
                i = 2
                while f"{stem[:3]}{i}" in taken:
                    i += 1
                self.table_codes[table_key] = f"{stem[:3]}{i}"
        return self.table_codes[table_key]

    def column(self, words: Sequence[str], table_key: str = "", table_words: Sequence[str] = ()) -> str:
        ws = [self._word(w) for w in words]
        if self.style == "prefixed" and table_key:
            ws = [self.table_code(table_key, table_words), *ws]
        return self._safe(self._join(ws, "column"), "column")

    def decoy(self, table_name: str, tag: str, in_front: bool) -> str:
        """A decoy copy's name: customers_bak, CustomersOld, STG_CUST, ..."""
        s = self.style
        if s in ("camel", "pascal_abbr"):
            return f"{tag.capitalize()}{table_name}" if in_front else f"{table_name}{tag.capitalize()}"
        if s in ("upper", "legacy"):
            sep = "_" if s == "upper" else ""
            return f"{tag.upper()}{sep}{table_name}" if in_front else f"{table_name}{sep}{tag.upper()}"
        return f"{tag}_{table_name}" if in_front else f"{table_name}_{tag}"


def style_words() -> list[str]:
    """Every abbreviation and prefix a database may use (for tokenizer vocabularies)."""
    words = {a for options in ABBREVIATIONS.values() for a in options}
    words |= {w for p in TABLE_PREFIXES for w in p}
    return sorted(words)
