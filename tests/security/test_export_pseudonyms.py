"""Exports are datasets to share: annotator ids are salted hashes unless the researcher asks for the
recruitment ids (form box ticked by default, API and command default on, jobs default on)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from django.core.management import call_command

from annotation.exports import annotator_pseudonym, export_job_create
from annotation.models import ExportJob
from tests.security.conftest import World


def test_the_export_form_ticks_pseudonymisation(world: World) -> None:
    page = world.client("owner").get(f"/studies/{world.a.study.slug}/export/").content.decode()
    box = re.search(r'<input type="checkbox" name="pseudonymize"[^>]*>', page).group(0)
    assert " checked" in box


def test_an_api_export_is_pseudonymised_unless_asked_otherwise(world: World) -> None:
    client = world.client("owner")
    url = f"/api/v1/studies/{world.a.study.slug}/exports"
    default = client.post(url, {"format": "jsonl"}, content_type="application/json")
    raw = client.post(url, {"format": "jsonl", "pseudonymize": False}, content_type="application/json")
    assert default.status_code == raw.status_code == 202
    assert default.json()["pseudonymize"] is True and raw.json()["pseudonymize"] is False
    assert export_job_create(study=world.a.study, user=None, export_format="csv").pseudonymize is True
    assert ExportJob.objects.filter(study=world.a.study, pseudonymize=True).count() == 2


def test_the_export_command_writes_pseudonyms_by_default(world: World, tmp_path: Path) -> None:
    study, external_id = world.a.study, world.a.participant.external_id
    default, raw = tmp_path / "default.jsonl", tmp_path / "raw.jsonl"

    # With attention checks: the fixture's one judgment may be on one (serving mixes them in at random).
    call_command("export_comparisons", study.slug, "-o", str(default), "--include-attention-checks")
    call_command("export_comparisons", study.slug, "-o", str(raw), "--no-pseudonymize", "--include-attention-checks")

    annotators = [json.loads(line)["annotator"] for line in default.read_text().splitlines()]
    assert annotators == [annotator_pseudonym(study=study, external_id=external_id)]
    assert external_id not in default.read_text()
    assert [json.loads(line)["annotator"] for line in raw.read_text().splitlines()] == [external_id]
