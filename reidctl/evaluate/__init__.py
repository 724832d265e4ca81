"""reidctl.evaluate"""
