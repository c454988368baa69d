"""``auditlm explain``: Captum attributions of the quantity a suite scores, and checks of their faithfulness."""
