"""reidctl.convert"""
