"""Neural collapse in deep linear networks (Dang, Tran, Osher, Tran-The, Ho & Nguyen, "Neural Collapse in
Deep Linear Networks: From Balanced to Imbalanced Data", ICML 2023), paper 14 of the zoo. Measurements:
README.md."""
