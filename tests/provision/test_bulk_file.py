"""Reading an installer's bulk sheet: columns, tags, and a bad line named."""

from __future__ import annotations

from pathlib import Path

import pytest
from hark_fleet.provision.cli import read_bulk_file
from hark_fleet.provision.errors import CsvError


def test_rows_carry_site_and_tags_split_on_semicolons_or_commas(tmp_path: Path) -> None:
    sheet = tmp_path / "site.csv"
    sheet.write_text(
        'hardware_id,claim_code,name,site,tags\nhw-1,ABCD-2345,mic-1,north,roof;west\nhw-2,EFGH-6789,mic-2,,"a, b"\n'
    )
    rows = read_bulk_file(sheet)
    assert [(r.hardware_id, r.name, r.site, r.tags) for r in rows] == [
        ("hw-1", "mic-1", "north", ["roof", "west"]),
        ("hw-2", "mic-2", None, ["a", "b"]),
    ]


def test_a_row_without_a_claim_code_is_named_by_its_line(tmp_path: Path) -> None:
    sheet = tmp_path / "site.csv"
    sheet.write_text("hardware_id,claim_code,name\nhw-1,ABCD-2345,mic-1\nhw-2,,mic-2\n")
    with pytest.raises(CsvError, match="site.csv:3"):
        read_bulk_file(sheet)


def test_a_sheet_without_the_required_columns_is_refused(tmp_path: Path) -> None:
    sheet = tmp_path / "site.csv"
    sheet.write_text("hw,code\nhw-1,ABCD-2345\n")
    with pytest.raises(CsvError, match="missing columns hardware_id, claim_code, name"):
        read_bulk_file(sheet)
