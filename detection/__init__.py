"""detection: Faster R-CNN with a Zoobot (timm) encoder + FPN backbone; train, evaluate, predict."""
