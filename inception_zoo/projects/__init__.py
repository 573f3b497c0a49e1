"""One folder per paper for what only that paper uses (models, losses, tasks, data generators, drivers,
analysis), on the shared core, with a README.md of its measurements; experiments/<name>.py holds its
recipes. The core never imports a project (pyproject.toml's import contracts); a project may import
anything of the core, never another project."""
