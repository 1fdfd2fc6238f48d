"""pFedHN and pFedHN-PC (Shamsian et al., ICML 2021) as a Flower baseline."""
