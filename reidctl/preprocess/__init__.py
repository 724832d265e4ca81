"""reidctl.preprocess"""
