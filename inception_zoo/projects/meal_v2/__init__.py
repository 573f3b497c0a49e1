"""MEAL V2 (Shen & Savvides, "MEAL V2: Boosting Vanilla ResNet-50 to 80%+ Top-1 Accuracy on ImageNet without
Tricks", arXiv:2009.08453), paper 12 of the zoo: a pre-trained student distilled from the averaged
softmax of a teacher ensemble, KL plus a discriminator on the final outputs, no hard labels.
Measurements: README.md."""
