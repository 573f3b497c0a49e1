"""NGAME (Dahiya, Gupta, Saini, Soni, Wang, Dave, Jiao, K, Dey, Singh, Hada, Jain, Paliwal, Mittal, Mehta,
Ramjee, Agarwal, Kar, Varma, "NGAME: Negative Mining-aware Mini-batching for Extreme Classification",
WSDM 2023), paper 6 of the zoo: negative-mining-aware mini-batching on a synthetic extreme-classification
set (CPU) and on the paper's LF-* product-title sets with DistilBERT (full setting). Measurements:
README.md."""
