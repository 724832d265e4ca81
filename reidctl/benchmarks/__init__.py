"""reidctl.benchmarks"""
