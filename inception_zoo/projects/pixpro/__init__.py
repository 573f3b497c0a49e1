"""PixPro (Xie et al., CVPR 2021): pixel-level consistency pre-training. pixpro.py: the model, losses
and train step; views.py: two augmented views with their crop boxes; scenes.py: the CPU settings' data;
run.py: the driver. Measurements: README.md."""
