"""After each dataset: answer counts (empty answers, failed rows) and the results summary beside the run."""
