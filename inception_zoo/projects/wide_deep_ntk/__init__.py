"""Wide and deep NTK classifiers (Radhakrishnan, Belkin, Uhler, "Wide and Deep Neural Networks Achieve
Optimality for Classification", arXiv:2204.14126, 2022), paper 20 of the zoo. Measurements: README.md."""
