"""``pat results``: the experiment grid (:mod:`.grid`) and its report (:mod:`.render`)."""
