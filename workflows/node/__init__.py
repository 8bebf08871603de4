"""The example `node` product family (Node, Port, Link): domain models, demo data and workflows."""
