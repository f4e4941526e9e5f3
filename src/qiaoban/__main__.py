from qiaoban.cli import app

app(prog_name="qiaoban")
