"""Business domains: the logical schema of a database's core tables, and its value pools.

A domain is 4-8 core tables joined by foreign keys. Every column has a role the question
templates understand (`kind`): pk, fk, label (what names a row), cat (a small set of
values to filter and group by), money / num / int (measures), date. Values are drawn from
the fixed pools below with a seeded generator (never `faker`: its output changes between
versions), so a database is a pure function of its seed.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

KINDS = ("pk", "fk", "label", "cat", "money", "num", "int", "date")
MEASURES = ("money", "num", "int")


@dataclass(frozen=True)
class ColumnDef:
    key: str                 # logical name, unique within its table
    kind: str                # one of KINDS
    gen: str = ""            # value generator (see `draw_value`)
    english: str = ""        # how a question names it
    comment: str = ""        # the catalogue's comment (when the database keeps one)
    ref: str = ""            # fk: the parent table's key

    @property
    def words(self) -> tuple[str, ...]:
        return tuple(self.key.split("_"))

    @property
    def sql_type(self) -> str:
        return {"pk": "INTEGER", "fk": "INTEGER", "int": "INTEGER", "money": "REAL", "num": "REAL"}.get(self.kind, "TEXT")


@dataclass(frozen=True)
class TableDef:
    key: str
    english: str             # singular: "customer"
    plural: str              # "customers"
    comment: str
    rows: tuple[int, int]    # row count range
    columns: tuple[ColumnDef, ...]

    @property
    def words(self) -> tuple[str, ...]:
        return tuple(self.key.split("_"))

    def col(self, key: str) -> ColumnDef:
        for c in self.columns:
            if c.key == key:
                return c
        raise KeyError(f"{self.key} has no column {key!r}")

    def of_kind(self, *kinds: str) -> list[ColumnDef]:
        return [c for c in self.columns if c.kind in kinds]

    @property
    def pk(self) -> ColumnDef:
        return self.of_kind("pk")[0]

    @property
    def label(self) -> ColumnDef | None:
        labels = self.of_kind("label")
        return labels[0] if labels else None

    @property
    def fks(self) -> list[ColumnDef]:
        return self.of_kind("fk")


@dataclass(frozen=True)
class Domain:
    name: str
    tables: tuple[TableDef, ...]     # parents before children
    words: tuple[str, ...] = field(default_factory=tuple)   # extra words for filler tables

    def table(self, key: str) -> TableDef:
        for t in self.tables:
            if t.key == key:
                return t
        raise KeyError(f"domain {self.name} has no table {key!r}")


def C(key: str, kind: str, gen: str = "", english: str = "", comment: str = "", ref: str = "") -> ColumnDef:
    english = english or key.replace("_", " ")
    return ColumnDef(key, kind, gen, english, comment or english.capitalize() + ".", ref)


def PK(key: str) -> ColumnDef:
    return C(key, "pk", "seq", key.replace("_", " "), "Primary key.")


def FK(key: str, ref: str, english: str = "") -> ColumnDef:
    return C(key, "fk", "", english or ref.replace("_", " "), f"References {ref.replace('_', ' ')}.", ref)


def T(key: str, english: str, plural: str, comment: str, rows: tuple[int, int], *cols: ColumnDef) -> TableDef:
    return TableDef(key, english, plural, comment, rows, tuple(cols))


# ---------------------------------------------------------------------------------------
# Value pools
# ---------------------------------------------------------------------------------------

POOLS: dict[str, tuple[str, ...]] = {
    "first": ("Ana", "Ben", "Carla", "Dev", "Elena", "Farid", "Grace", "Hugo", "Ines", "Jonas", "Kara", "Liam",
              "Mei", "Nora", "Omar", "Priya", "Quinn", "Rosa", "Sami", "Tara", "Uma", "Victor", "Wen", "Xavier",
              "Yara", "Zane", "Aiko", "Bruno", "Chloe", "Diego", "Emil", "Freya", "Goran", "Hana", "Ivan", "Julia"),
    "last": ("Silva", "Novak", "Okafor", "Larsen", "Moreau", "Tanaka", "Khan", "Rossi", "Meyer", "Costa",
             "Dubois", "Haddad", "Ivanova", "Jensen", "Kowalski", "Lopez", "Mendes", "Nakamura", "Olsen", "Petrov",
             "Quispe", "Reyes", "Schmidt", "Torres", "Ueda", "Varga", "Weber", "Yilmaz", "Zhang", "Bauer"),
    "city": ("Lisbon", "Porto", "Madrid", "Lyon", "Turin", "Ghent", "Leeds", "Cork", "Bergen", "Malmo", "Gdansk",
             "Brno", "Graz", "Basel", "Utrecht", "Aarhus", "Tampere", "Riga", "Vilnius", "Split"),
    "country": ("Portugal", "Spain", "France", "Italy", "Belgium", "Ireland", "Norway", "Sweden", "Poland",
                "Austria", "Denmark", "Finland"),
    "region": ("North", "South", "East", "West", "Central", "Coastal", "Highlands", "Metro"),
    "store": ("Harbour Mall", "Old Town", "Riverside", "Station Square", "Market Hall", "Airport", "Parkview",
              "Hilltop", "Garden Court", "Lakeside", "Bridge Street", "Central Plaza", "Northgate", "Westfield",
              "Kings Road", "Canal Walk"),
    "category": ("Kitchen", "Audio", "Outdoor", "Toys", "Office", "Bedding", "Lighting", "Garden", "Sports",
                 "Beauty", "Storage", "Pets"),
    "brand": ("Arno", "Belle", "Cobalt", "Dune", "Everly", "Fjord", "Granite", "Halo"),
    "adjective": ("Compact", "Classic", "Deluxe", "Eco", "Smart", "Mini", "Pro", "Ultra", "Basic", "Travel"),
    "noun": ("Kettle", "Speaker", "Lamp", "Backpack", "Blender", "Chair", "Desk", "Tent", "Pillow", "Mixer",
             "Heater", "Fan", "Clock", "Mirror", "Shelf", "Bottle", "Helmet", "Stool"),
    "dept": ("Finance", "Marketing", "Engineering", "Sales", "Legal", "Operations", "Research", "Support",
             "Procurement", "Human Resources", "Security", "Design"),
    "job": ("Analyst", "Engineer", "Accountant", "Recruiter", "Designer", "Technician", "Consultant", "Coordinator",
            "Architect", "Auditor", "Planner", "Specialist", "Administrator", "Developer"),
    "project": ("Apollo", "Beacon", "Cascade", "Delta", "Ember", "Falcon", "Glacier", "Horizon", "Ion", "Juniper",
                "Keystone", "Lantern", "Meridian", "Nimbus", "Orion", "Pioneer", "Quasar"),
    "carrier": ("SwiftLine", "BlueRoad", "NorthFreight", "Cargonaut", "RapidWay", "IronHaul", "TransAlp",
                "SeaBridge", "EuroMove", "FastTrack"),
    "warehouse": ("Depot A", "Depot B", "North Hub", "South Hub", "Port Terminal", "Rail Yard", "Cold Store",
                  "Airside", "Inland Park", "Crossdock"),
    "branch": ("Main Street", "Old Harbour", "University", "Market Square", "Business Park", "Riverside",
               "Cathedral", "Station", "Hill Road"),
    "ward": ("Maple", "Cedar", "Willow", "Birch", "Aspen", "Rowan", "Hazel", "Linden", "Elm"),
    "specialty": ("cardiology", "oncology", "pediatrics", "orthopedics", "neurology", "geriatrics"),
    "medication": ("Amoxil", "Lipitor", "Zestril", "Glucophage", "Ventolin", "Nexium", "Zoloft", "Coumadin",
                   "Synthroid", "Lasix", "Norvasc", "Plavix", "Keflex", "Motrin", "Tylenol", "Xanax",
                   "Prozac", "Valtrex", "Imitrex", "Cipro"),
    "academic_dept": ("Mathematics", "Physics", "History", "Biology", "Chemistry", "Economics", "Philosophy",
                      "Linguistics", "Computer Science", "Music"),
    "building": ("North Hall", "South Hall", "Science Tower", "Library Wing", "Arts Centre", "Annex"),
    "course": ("Calculus", "Linear Algebra", "Mechanics", "Optics", "Modern History", "Genetics", "Ecology",
               "Organic Chemistry", "Microeconomics", "Macroeconomics", "Logic", "Ethics", "Phonetics",
               "Syntax", "Algorithms", "Databases", "Operating Systems", "Harmony", "Statistics",
               "Thermodynamics", "Astronomy", "Cell Biology", "Game Theory", "Compilers", "Topology",
               "Number Theory", "Acoustics", "Epistemology", "Semantics", "Networks"),
}


def _person(rng: random.Random) -> str:
    return f"{rng.choice(POOLS['first'])} {rng.choice(POOLS['last'])}"


def draw_value(gen: str, rng: random.Random, row: int) -> Any:
    """One value of generator `gen` for row number `row` (0-based).

    seq | person | pool:<name> | choice:a|b|c | money:lo:hi | num:lo:hi:decimals | int:lo:hi |
    date:y0:y1 | code:PFX | product
    """
    kind, _, arg = gen.partition(":")
    if kind == "person":
        return _person(rng)
    if kind == "pool":
        return rng.choice(POOLS[arg])
    if kind == "choice":
        return rng.choice(arg.split("|"))
    if kind == "money":
        lo, hi = (float(x) for x in arg.split(":"))
        return round(rng.uniform(lo, hi), 2)
    if kind == "num":
        lo, hi, dec = arg.split(":")
        return round(rng.uniform(float(lo), float(hi)), int(dec))
    if kind == "int":
        lo, hi = (int(x) for x in arg.split(":"))
        return rng.randint(lo, hi)
    if kind == "date":
        y0, y1 = (int(x) for x in arg.split(":"))
        return f"{rng.randint(y0, y1)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
    if kind == "code":
        return f"{arg}-{rng.randint(10000, 99999)}"
    if kind == "product":
        return f"{rng.choice(POOLS['adjective'])} {rng.choice(POOLS['noun'])}"
    raise ValueError(f"unknown value generator {gen!r}")


# Generators whose values must be unique within a table (a label names one row).
UNIQUE_GENS = ("person", "code", "product", "pool:store", "pool:category", "pool:dept", "pool:job",
               "pool:project", "pool:carrier", "pool:warehouse", "pool:branch", "pool:ward",
               "pool:medication", "pool:academic_dept", "pool:course", "pool:region")

# ---------------------------------------------------------------------------------------
# Domains
# ---------------------------------------------------------------------------------------

RETAIL = Domain("retail", (
    T("region", "region", "regions", "Sales regions.", (5, 8),
      PK("region_id"), C("region_name", "label", "pool:region", "name"), C("country", "cat", "pool:country")),
    T("store", "store", "stores", "Physical stores, one row per store.", (8, 14),
      PK("store_id"), C("store_name", "label", "pool:store", "name"), C("city", "cat", "pool:city"),
      FK("region_id", "region"), C("opened_date", "date", "date:2008:2022", "opening date"),
      C("floor_area", "int", "int:200:3000", "floor area", "Sales floor in square metres.")),
    T("customer", "customer", "customers", "Customer master records.", (30, 55),
      PK("customer_id"), C("full_name", "label", "person", "name"), C("city", "cat", "pool:city"),
      C("segment", "cat", "choice:consumer|corporate|small business|government"),
      C("signup_date", "date", "date:2015:2024", "signup date"),
      C("loyalty_points", "int", "int:0:5000", "loyalty points"), FK("region_id", "region")),
    T("category", "category", "categories", "Product categories.", (6, 10),
      PK("category_id"), C("category_name", "label", "pool:category", "name"),
      C("department", "cat", "choice:home|electronics|leisure|personal care")),
    T("product", "product", "products", "Products on sale.", (25, 45),
      PK("product_id"), C("product_name", "label", "product", "name"), FK("category_id", "category"),
      C("unit_price", "money", "money:2:400", "unit price"), C("brand", "cat", "pool:brand")),
    T("sales_order", "order", "orders", "Sales orders, one row per order.", (60, 110),
      PK("order_id"), C("order_number", "label", "code:SO", "order number"), FK("customer_id", "customer"),
      FK("store_id", "store"), C("order_date", "date", "date:2019:2024", "order date"),
      C("status", "cat", "choice:shipped|pending|cancelled|returned|delivered"),
      C("total_amount", "money", "money:10:2500", "total amount")),
    T("order_line", "order line", "order lines", "Order lines: one product on one order.", (110, 200),
      PK("order_line_id"), FK("order_id", "sales_order"), FK("product_id", "product"),
      C("quantity", "int", "int:1:12"), C("line_amount", "money", "money:2:900", "line amount")),
), ("sales", "promo", "coupon", "basket", "inventory", "supplier", "price", "return", "loyalty", "web"))

HR = Domain("hr", (
    T("location", "location", "locations", "Office locations.", (5, 8),
      PK("location_id"), C("site_name", "label", "pool:city", "site name"), C("country", "cat", "pool:country")),
    T("department", "department", "departments", "Departments of the company.", (6, 10),
      PK("department_id"), C("department_name", "label", "pool:dept", "name"), FK("location_id", "location"),
      C("budget", "money", "money:50000:2000000")),
    T("job", "job", "jobs", "Job titles and pay bands.", (6, 12),
      PK("job_id"), C("job_title", "label", "pool:job", "title"),
      C("job_level", "cat", "choice:junior|mid|senior|principal", "level"),
      C("minimum_salary", "money", "money:25000:90000", "minimum salary")),
    T("employee", "employee", "employees", "Employee master data, one row per employee.", (40, 70),
      PK("employee_id"), C("full_name", "label", "person", "name"), FK("department_id", "department"),
      FK("job_id", "job"), C("hire_date", "date", "date:2005:2024", "hire date"),
      C("salary", "money", "money:30000:180000"),
      C("employment_status", "cat", "choice:active|on leave|terminated|contractor", "employment status")),
    T("project", "project", "projects", "Internal projects.", (8, 15),
      PK("project_id"), C("project_name", "label", "pool:project", "name"), FK("department_id", "department"),
      C("start_date", "date", "date:2018:2024", "start date"), C("budget", "money", "money:10000:900000"),
      C("status", "cat", "choice:planned|active|completed|cancelled")),
    T("assignment", "assignment", "assignments", "Which employee works on which project.", (60, 110),
      PK("assignment_id"), FK("employee_id", "employee"), FK("project_id", "project"),
      C("role", "cat", "choice:lead|developer|analyst|tester|designer"),
      C("hours", "int", "int:2:40", "weekly hours")),
), ("payroll", "leave", "benefit", "training", "review", "timesheet", "badge", "pension", "candidate"))

LOGISTICS = Domain("logistics", (
    T("carrier", "carrier", "carriers", "Transport companies.", (5, 9),
      PK("carrier_id"), C("carrier_name", "label", "pool:carrier", "name"), C("country", "cat", "pool:country"),
      C("rating", "int", "int:1:5")),
    T("driver", "driver", "drivers", "Drivers employed by carriers.", (15, 30),
      PK("driver_id"), C("driver_name", "label", "person", "name"), FK("carrier_id", "carrier"),
      C("license_class", "cat", "choice:B|C|CE|D", "license class"),
      C("hire_date", "date", "date:2010:2024", "hire date")),
    T("warehouse", "warehouse", "warehouses", "Warehouses shipments leave from.", (5, 10),
      PK("warehouse_id"), C("warehouse_name", "label", "pool:warehouse", "name"), C("city", "cat", "pool:city"),
      C("capacity", "int", "int:1000:50000", "capacity", "Capacity in cubic metres.")),
    T("route", "route", "routes", "Transport routes.", (8, 15),
      PK("route_id"), C("route_code", "label", "code:RT", "code"), C("origin_city", "cat", "pool:city", "origin city"),
      C("distance", "int", "int:50:3000", "distance", "Length in kilometres.")),
    T("shipment", "shipment", "shipments", "Shipments, one row per consignment.", (60, 110),
      PK("shipment_id"), C("tracking_number", "label", "code:TRK", "tracking number"),
      FK("warehouse_id", "warehouse"), FK("driver_id", "driver"), FK("route_id", "route"),
      C("ship_date", "date", "date:2020:2024", "ship date"),
      C("status", "cat", "choice:delivered|in transit|delayed|lost|returned"),
      C("freight_cost", "money", "money:40:4000", "freight cost")),
    T("package", "package", "packages", "Packages within shipments.", (100, 180),
      PK("package_id"), C("package_code", "label", "code:PKG", "code"), FK("shipment_id", "shipment"),
      C("package_type", "cat", "choice:box|pallet|envelope|crate|drum", "type"),
      C("weight", "num", "num:0.5:80:1", "weight", "Weight in kilograms."),
      C("declared_value", "money", "money:5:5000", "declared value")),
), ("fleet", "fuel", "dock", "manifest", "customs", "tariff", "vehicle", "tracking", "incident"))

FINANCE = Domain("finance", (
    T("branch", "branch", "branches", "Bank branches.", (5, 9),
      PK("branch_id"), C("branch_name", "label", "pool:branch", "name"), C("city", "cat", "pool:city"),
      C("region", "cat", "choice:north|south|east|west")),
    T("client", "client", "clients", "Clients of the bank, one row per client.", (30, 55),
      PK("client_id"), C("client_name", "label", "person", "name"), FK("branch_id", "branch"),
      C("segment", "cat", "choice:retail|private|corporate|small business"),
      C("join_date", "date", "date:2005:2024", "join date"), C("city", "cat", "pool:city")),
    T("account", "account", "accounts", "Accounts held by clients.", (50, 85),
      PK("account_id"), C("account_number", "label", "code:AC", "account number"), FK("client_id", "client"),
      C("account_type", "cat", "choice:checking|savings|brokerage|credit", "account type"),
      C("balance", "money", "money:-5000:250000"), C("opened_date", "date", "date:2008:2024", "opening date")),
    T("account_transaction", "transaction", "transactions", "Account transactions, one row per booking.",
      (110, 200),
      PK("transaction_id"), C("reference_code", "label", "code:TX", "reference"), FK("account_id", "account"),
      C("transaction_date", "date", "date:2021:2024", "date"),
      C("transaction_type", "cat", "choice:deposit|withdrawal|transfer|fee|interest", "type"),
      C("amount", "money", "money:1:20000"), C("channel", "cat", "choice:online|branch|atm|mobile")),
    T("loan", "loan", "loans", "Loans granted to clients.", (20, 40),
      PK("loan_id"), C("loan_number", "label", "code:LN", "loan number"), FK("client_id", "client"),
      C("loan_type", "cat", "choice:mortgage|auto|personal|business", "loan type"),
      C("principal", "money", "money:2000:600000"), C("interest_rate", "num", "num:1.5:12:2", "interest rate"),
      C("start_date", "date", "date:2010:2024", "start date"),
      C("loan_status", "cat", "choice:current|late|paid off|default", "status")),
), ("ledger", "fx", "rate", "card", "statement", "kyc", "limit", "fraud", "portfolio", "fee"))

HEALTHCARE = Domain("healthcare", (
    T("ward", "ward", "wards", "Hospital wards.", (5, 8),
      PK("ward_id"), C("ward_name", "label", "pool:ward", "name"), C("floor", "int", "int:1:9"),
      C("specialty", "cat", "pool:specialty")),
    T("doctor", "doctor", "doctors", "Doctors on staff.", (12, 24),
      PK("doctor_id"), C("doctor_name", "label", "person", "name"), FK("ward_id", "ward"),
      C("specialty", "cat", "pool:specialty"), C("hire_date", "date", "date:2000:2024", "hire date")),
    T("patient", "patient", "patients", "Registered patients.", (40, 70),
      PK("patient_id"), C("patient_name", "label", "person", "name"), C("city", "cat", "pool:city"),
      C("blood_type", "cat", "choice:A+|A-|B+|B-|O+|O-|AB+", "blood type"),
      C("birth_date", "date", "date:1940:2015", "birth date")),
    T("visit", "visit", "visits", "Patient visits, one row per visit.", (80, 140),
      PK("visit_id"), C("visit_code", "label", "code:V", "visit code"), FK("patient_id", "patient"),
      FK("doctor_id", "doctor"), C("visit_date", "date", "date:2021:2024", "visit date"),
      C("visit_type", "cat", "choice:checkup|emergency|follow-up|surgery|consultation", "visit type"),
      C("fee", "money", "money:20:3000")),
    T("medication", "medication", "medications", "Medications in the formulary.", (10, 18),
      PK("medication_id"), C("medication_name", "label", "pool:medication", "name"),
      C("drug_class", "cat", "choice:antibiotic|analgesic|statin|antidepressant|diuretic", "drug class"),
      C("unit_cost", "money", "money:0.5:120", "unit cost")),
    T("prescription", "prescription", "prescriptions", "Medications prescribed at visits.", (100, 170),
      PK("prescription_id"), FK("visit_id", "visit"), FK("medication_id", "medication"),
      C("dosage", "int", "int:5:1000", "dosage", "Dose in milligrams."),
      C("duration", "int", "int:1:90", "duration", "Days of treatment.")),
), ("lab", "imaging", "bed", "admission", "allergy", "insurance", "referral", "vital", "triage"))

EDUCATION = Domain("education", (
    T("department", "department", "departments", "Academic departments.", (5, 8),
      PK("department_id"), C("department_name", "label", "pool:academic_dept", "name"),
      C("building", "cat", "pool:building")),
    T("instructor", "instructor", "instructors", "Teaching staff.", (12, 24),
      PK("instructor_id"), C("instructor_name", "label", "person", "name"), FK("department_id", "department"),
      C("academic_rank", "cat", "choice:lecturer|assistant professor|associate professor|professor", "rank"),
      C("salary", "money", "money:40000:160000"), C("hire_date", "date", "date:1995:2024", "hire date")),
    T("course", "course", "courses", "Courses in the catalogue.", (15, 28),
      PK("course_id"), C("course_title", "label", "pool:course", "title"), FK("department_id", "department"),
      C("credits", "int", "int:1:6"), C("course_level", "cat", "choice:introductory|intermediate|advanced", "level")),
    T("student", "student", "students", "Enrolled students.", (40, 70),
      PK("student_id"), C("student_name", "label", "person", "name"),
      C("enrollment_year", "int", "int:2016:2024", "enrollment year"), C("home_city", "cat", "pool:city", "home city")),
    T("section", "section", "sections", "Course sections taught in a term.", (20, 36),
      PK("section_id"), C("section_code", "label", "code:SEC", "code"), FK("course_id", "course"),
      FK("instructor_id", "instructor"), C("term", "cat", "choice:fall 2022|spring 2023|fall 2023|spring 2024"),
      C("capacity", "int", "int:15:120")),
    T("enrollment", "enrollment", "enrollments", "Students enrolled in sections.", (110, 190),
      PK("enrollment_id"), FK("student_id", "student"), FK("section_id", "section"),
      C("letter_grade", "cat", "choice:A|B|C|D|F", "grade"), C("final_score", "num", "num:30:100:1", "final score")),
), ("exam", "thesis", "scholarship", "timetable", "room", "alumni", "library", "advisor", "credit"))

DOMAINS: dict[str, Domain] = {d.name: d for d in (RETAIL, HR, LOGISTICS, FINANCE, HEALTHCARE, EDUCATION)}

# Words filler tables are built from, whatever the domain.
FILLER_WORDS = ("audit", "log", "config", "session", "user", "report", "import", "export", "batch", "queue",
                "mapping", "lookup", "metric", "event", "notification", "archive", "snapshot", "summary",
                "forecast", "survey", "ticket", "asset", "vendor", "contract", "policy", "job", "task",
                "schedule", "cache", "history", "note", "tag", "setting", "permission", "role", "feed")
FILLER_SUFFIXES = ("hist", "log", "audit", "map", "xref", "snapshot", "2019", "2020", "2021", "q1", "q3",
                   "tmp", "summary", "cfg", "ext", "v2", "daily", "monthly", "raw", "detail")
FILLER_COLUMNS = (C("created_date", "date", "date:2015:2024"), C("updated_by", "cat", "person"),
                  C("batch_id", "int", "int:1:999"), C("note", "cat", "choice:ok|check|n/a|pending review"),
                  C("source_system", "cat", "choice:erp|crm|legacy|manual"), C("row_version", "int", "int:1:9"),
                  C("is_active", "int", "int:0:1"), C("load_date", "date", "date:2019:2024"))


def domain(name: str) -> Domain:
    if name not in DOMAINS:
        raise ValueError(f"unknown SQL domain {name!r}; domains: {', '.join(DOMAINS)}")
    return DOMAINS[name]


def domain_words() -> list[str]:
    """Every word a generated schema or question can use (for tokenizer vocabularies)."""
    words: set[str] = set(FILLER_WORDS) | set(FILLER_SUFFIXES)
    for d in DOMAINS.values():
        words |= set(d.words)
        for t in d.tables:
            words |= set(t.words) | set(t.english.split()) | set(t.plural.split())
            for c in t.columns:
                words |= set(c.words) | set(c.english.split())
                if c.gen.startswith("choice:"):
                    words |= set(" ".join(c.gen[7:].split("|")).split())
    for pool in POOLS.values():
        for v in pool:
            words |= set(v.split())
    return sorted(words)
