"""Where the repository's SQL and templates live (next to the packages, see README)."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SQL_DIR = ROOT / "sql"
TEMPLATE_DIR = ROOT / "report_templates"
