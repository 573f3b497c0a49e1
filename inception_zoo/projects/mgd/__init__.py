"""MGD (Qin et al., "Multi-Granularity Distillation Scheme Towards Lightweight Semi-Supervised Semantic
Segmentation", ECCV 2022), paper 30 of the zoo: a lightweight DeepLabV3+ student distilled on labelled and
unlabelled images from two frozen complementary teachers, at the pixel level (cross pseudo-labels with CutMix),
the image level (pooled class logits) and the region level (self-similarity of decoder features).
Measurements: README.md."""
