"""secagg + Flower example: FedAvg under secure aggregation."""
