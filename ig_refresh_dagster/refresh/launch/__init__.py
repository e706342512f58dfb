"""Every way a refresh starts gets its tags, priority and partition bookkeeping from here."""
