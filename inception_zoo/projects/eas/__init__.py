"""EAS (Cai, Chen, Zhang, Yu, Wang, "Efficient Architecture Search by Network Transformation", AAAI 2018),
paper 11 of the zoo: controller-guided search by function-preserving transformations on digits.
Measurements: README.md."""
