"""The inhibition circuit of one unit: which upstream channels keep it off, shown and tested
by ablation and the echo (``run.run_circuit``)."""
