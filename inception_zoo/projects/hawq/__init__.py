"""HAWQ (Dong, Yao, Gholami, Mahoney, Keutzer, "HAWQ: Hessian AWare Quantization of Neural Networks with
Mixed-Precision", ICCV 2019), paper 34 of the zoo: Hessian-guided mixed precision against uniform
precision (and the reversed ranking) at equal model size. Measurements: README.md."""
