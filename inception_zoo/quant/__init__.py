"""Quantisation as a reparametrisation of any registered model's parameters: uniform fake
quantisation and HAWQ's Hessian-aware bit allocation (`uniform`, `hawq`), DenseShift's low-bit shift
weights (`shift`); `inception_zoo.train.qat` trains through them."""
