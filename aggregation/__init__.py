"""aggregation: Zooniverse classification exports -> consensus clumps, volunteer skills, training boxes."""
