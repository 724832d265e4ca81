"""reidctl.runners"""
