"""Every document the code, the configs or the README cites is in the repository (a clone holds
nothing else), every section cited by name exists, and the README stays short."""
import re

from .conftest import ROOT

SOURCES = [p for pattern in ("nai3train/**/*.py", "nai3eval/**/*.py", "flows/**/*.py", "tests/**/*.py", "bench/**/*",
                             "configs/**/*.yaml", "mlflow/**/*.md", "docs/**/*.md", "*.md", "*.toml", "Makefile",
                             "prefect.yaml")
           for p in ROOT.glob(pattern) if p.is_file() and p.suffix not in (".png", ".pyc")]
CITED = re.compile(r"docs/([\w-]+\.md)(?:, \"([^\"]+)\")?")
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def _headings(doc) -> set[str]:
    return {line.lstrip("#").strip() for line in doc.read_text().splitlines() if line.startswith("#")}


def test_every_cited_document_and_section_exists():
    assert len(SOURCES) > 50
    missing = []
    for src in SOURCES:
        text = src.read_text(errors="replace")
        for name, section in CITED.findall(text):
            doc = ROOT / "docs" / name
            if not doc.is_file():
                missing.append(f"{src.relative_to(ROOT)} cites docs/{name}")
            elif section and section not in _headings(doc):
                missing.append(f"{src.relative_to(ROOT)} cites section {section!r} of docs/{name}")
        if src.suffix == ".md":
            for target in LINK.findall(text):
                if not target.startswith(("http://", "https://", "mailto:")) and not (src.parent / target).exists():
                    missing.append(f"{src.relative_to(ROOT)} links {target}")
        for outside in ("paper.md", "design.md", "statistics.md", "../shared"):
            if outside in text and src.name != "test_docs.py":
                missing.append(f"{src.relative_to(ROOT)} cites {outside}, which a clone does not hold")
    assert not missing, "\n".join(missing)


def test_the_readme_stays_short():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 220


def test_what_invalidates_what_is_the_boundary_the_code_draws():
    """docs/operations.md's table of identities restates flows/identity.py: tested against it."""
    from flows import identity

    text = (ROOT / "docs" / "operations.md").read_text()
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:5]]
            for line in text[text.index("## What invalidates what"):].splitlines()
            if line.startswith("| ") and not line.startswith("| identity")}
    code = {"training": (identity.TRAINING_CODE, identity.TRAINING_LIBRARIES),
            "evaluation": (identity.EVALUATION_CODE, identity.EVALUATION_LIBRARIES),
            "instrument": (identity.INSTRUMENT_CODE, identity.INSTRUMENT_LIBRARIES)}
    assert set(rows) == set(code)
    for kind, ((include, exclude), libraries) in code.items():
        covers, leaves_out, libs = rows[kind]
        assert re.findall(r"`([^`]+)`", covers) == list(include), kind
        assert re.findall(r"`([^`]+)`", leaves_out) == list(exclude), kind
        assert [x.strip() for x in libs.split(",")] == list(libraries), kind


def test_the_claims_table_and_version_in_docs_are_the_specs():
    """docs/claims.md restates the spec: its version, every claim id (and none other), and each
    claim's registered margin and smallest effect of interest in that claim's row."""
    from nai3eval.claims import load_claims_spec

    spec = load_claims_spec()
    text = (ROOT / "docs" / "claims.md").read_text()
    assert f"(the current spec is version\n{spec.version})" in text or \
        f"(the current spec is version {spec.version})" in text
    table = text[text.index("## The claims\n"):text.index("\n\n", text.index("| claim |"))]
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| claim")]
    ids = {i for line in rows for i in re.findall(r"\b(?:C\d|A0)[\w-]*", line.split("|")[1])}
    assert ids == {c.id for c in spec.claims}, ids ^ {c.id for c in spec.claims}
    for c in spec.claims:
        row = next(line for line in rows if re.search(rf"(?<![\w-]){re.escape(c.id)}(?![\w-])", line.split("|")[1]))
        for value in (c.rule.margin, c.rule.sesoi):
            if value is not None and c.rule.kind != "null_twin":
                assert f"{value:g}" in row or f"{value:.2f}" in row, (c.id, value, row)
