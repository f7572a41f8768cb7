import MaxKCert.Brute
import MaxKCert.Cubic
import MaxKCert.Subcubic
