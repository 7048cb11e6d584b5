"""LiveQA: answers livestream viewers' questions out loud."""
