"""What several rooms share: YAML config loading (`config`), the Ray connection of a job's
driver (`ray_cluster`), Ray Data's scheduling delays (`ray_data_tuning`), and small files
written whole (`files`)."""
