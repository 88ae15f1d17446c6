"""Learning from live traffic: adapting a router to feedback rows (`adapt`) and deciding whether a candidate
may replace the deployed router (`compare`)."""
