"""Neural architecture search: EAS network transformations and controller, SimQ-NAS supernet and search."""
