from twisted.application.service import ServiceMaker

kgw = ServiceMaker("kgw", "kgw.tap", "A Jupyter kernel gateway.", "kgw")
