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
