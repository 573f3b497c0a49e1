"""Graphs and hypergraphs as edge / incidence lists: normalised propagation with `segment_sum`
(papers 22 DAGNN and 18 LightHGNN), generated and Planetoid node-classification data."""
