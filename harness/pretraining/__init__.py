"""``vlbench pretrain``: pre-training on image-caption pairs (config, batches, loop, run), one file each."""
