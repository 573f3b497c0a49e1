"""Small theory papers: models, estimators and closed-form predictions checked by simulation."""
