"""Analysis: the analyzer that runs the rule table (layer kinds' rules plus the
elementwise, movement and product rules) over a traced graph, the replays on compressed ids,
unit building, and what a unit is (labels, the model graph)."""
