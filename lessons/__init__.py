"""The lessons, shipped with the package as `minigpt_ptv2.lessons` (see pyproject.toml), so that
`python -m minigpt_ptv2 lessons` can copy them out for a pip user. Each lesson is a script and a
notebook; nothing here is imported by the package itself."""
