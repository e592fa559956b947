"""Training: outer optimiser and schedules, the teach schedule, stability guards,
checkpoints with exact resume, DDP through torchrun, DVCLive logging."""
