"""simulation: a synthetic Galaxy Zoo: Clump Scout project (images, volunteers, exports, truth)."""
