"""active_learning: score unlabelled galaxies, pick a diverse batch, upload it to Zooniverse."""
